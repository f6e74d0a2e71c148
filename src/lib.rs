//! placeholder
pub mod protocol;
pub mod server;

pub use server::{Server, ServerConfig};
