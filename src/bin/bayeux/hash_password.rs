//! `bayeux hash-password`: prints a users file line (`name:$argon2id$...:role`) for a
//! password, salted and hashed with Argon2id.

use std::io::{BufRead, IsTerminal};

use bayeux::workbin::{Role, UserDirectory, hash_password};
use clap::Args;

/// The arguments of `bayeux hash-password`.
#[derive(Args)]
pub struct HashPasswordArgs {
    /// The user's name (no ':', no spaces).
    user: String,
    /// The user's role: agent or supervisor.
    #[arg(long, default_value = "agent", value_parser = parse_role)]
    role: Role,
}

fn parse_role(name: &str) -> Result<Role, String> {
    Role::from_name(name).ok_or_else(|| format!("{name:?}: expected agent or supervisor"))
}

/// Reads the password (asked for without echo on a terminal, or the first line of the
/// standard input when it is piped) and prints the line for the users file.
pub fn run(args: HashPasswordArgs) -> Result<(), Box<dyn std::error::Error>> {
    let user = &args.user;
    if user.is_empty()
        || user.contains(':')
        || user.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(
            format!("{user:?}: a user name may not be empty nor hold ':' or spaces").into(),
        );
    }
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {user}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            return Err("the passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let line = format!(
        "{user}:{}:{}",
        hash_password(&password)?,
        args.role.as_str()
    );
    // The line must read back as it was meant: the server's own parser checks it.
    let directory = UserDirectory::parse(&line)?;
    if directory.verify(user, &password) != Some(args.role) {
        return Err("the hash does not verify (this is a bug)".into());
    }
    println!("{line}");
    Ok(())
}
