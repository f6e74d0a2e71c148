//! `bayeux demo`: the whole story in one command. A server starts in-process, agents
//! connect, a supervisor assigns interactions, and each notification is shown arriving
//! with its end-to-end latency (from the supervisor's POST to the agent's stream).

use std::time::{Duration, Instant};

use bayeux::client::Client;
use bayeux::server::ServerConfig;
use bayeux::workbin::{Access, DemoApp, WorkbinConfig};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::assign;

/// Options of `bayeux demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// How many agents connect (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    agents: u16,
    /// How many interactions the supervisor assigns (round robin over agents and media).
    #[arg(long, default_value_t = 8)]
    assignments: usize,
}

struct Received {
    agent: String,
    channel: String,
    data: Value,
    at: Instant,
}

/// Runs the scenario and exits; fails if a notification is missing or misdelivered.
pub async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let agents = usize::from(args.agents);
    let app = DemoApp::new(
        ServerConfig::default(),
        Access::demo(),
        WorkbinConfig::default(),
        "/cometd",
    );
    let listening = app.listen("127.0.0.1:0".parse()?).await?;
    let base = listening.url("");
    let url = listening.url("/cometd");
    let plural = if agents == 1 { "agent" } else { "agents" };
    println!("server at {url}; {agents} {plural} connecting");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for i in 1..=agents {
        let name = format!("agent{i}");
        let client = Client::builder(&url).basic_auth(&name, "demo").build()?;
        client.handshake().await?;
        let mut inbox = client.subscribe("/v2/me/*").await?;
        let tx = tx.clone();
        let agent = name.clone();
        tokio::spawn(async move {
            while let Some(m) = inbox.next().await {
                let _ = tx.send(Received {
                    agent: agent.clone(),
                    channel: m.channel_str().to_string(),
                    data: m.data.unwrap_or(Value::Null),
                    at: Instant::now(),
                });
            }
        });
        clients.push(client);
    }

    let http = assign::http();
    let ops = ["AddEmail", "AddChat", "AddWorkitem", "AddInteraction"];
    let mut latencies = Vec::new();
    for n in 0..args.assignments {
        let agent = format!("agent{}", n % agents + 1);
        let op = ops[n % ops.len()];
        let uri = format!("http://crm.example/interactions/IX{:04}", n + 1);
        let sent = Instant::now();
        let (status, reply) = assign::post(
            &http,
            &base,
            &agent,
            "wb1",
            op,
            &uri,
            None,
            Duration::from_secs(10),
        )
        .await?;
        let reference = reply["referenceId"]
            .as_u64()
            .ok_or_else(|| format!("HTTP {status}: {reply}"))?;
        println!("supervisor -> {agent}: {op} {uri} => {reply}");
        for _ in 0..2 {
            let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .map_err(|_| "a notification did not arrive within 5 s")?
                .ok_or("the agents stopped")?;
            if r.agent != agent || r.data["referenceId"] != reference {
                return Err(format!(
                    "misdelivered: {} got {} for referenceId {}",
                    r.agent, r.channel, r.data["referenceId"]
                )
                .into());
            }
            let latency = r.at.duration_since(sent);
            latencies.push(latency);
            println!(
                "  {:<8} <- {:<18} {:<28} referenceId={reference} latency={:.2} ms",
                r.agent,
                r.channel,
                r.data["messageType"].as_str().unwrap_or("?"),
                latency.as_secs_f64() * 1000.0
            );
        }
    }
    latencies.sort();
    if let Some(median) = latencies.get(latencies.len() / 2) {
        println!(
            "{} notifications delivered to the right agents; median end-to-end latency {:.2} ms",
            latencies.len(),
            median.as_secs_f64() * 1000.0
        );
    }
    for c in clients {
        let _ = c.disconnect().await;
    }
    listening.shutdown().await?;
    Ok(())
}
