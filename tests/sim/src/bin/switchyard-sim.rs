//! `switchyard-sim`: runs the simulators standalone with seeded data, for
//! the demo and for trying a plugin by hand.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::{Parser, ValueEnum};
use switchyard_sim::beyondtrust::{BeyondTrust, BtConfig};
use switchyard_sim::identity::{Identity, IdentityConfig};
use switchyard_sim::mtd::{Mtd, MtdConfig};
use switchyard_sim::servicenow::{ServiceNow, ServiceNowConfig};
use switchyard_sim::slack::{Slack, SlackConfig};
use switchyard_sim::uem::{Uem, UemConfig};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    Uem,
    Servicenow,
    Slack,
    Beyondtrust,
    Mtd,
    Identity,
}

/// Serves protocol-faithful simulators of Workspace ONE UEM, ServiceNow,
/// Slack, BeyondTrust Remote Support, a mobile threat defense service and an
/// identity system on loopback ports until Ctrl-C.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Which simulator(s) to run.
    #[arg(value_enum, default_value = "all")]
    which: Which,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Devices in UEM.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Users in ServiceNow (person 0..N of the seed, matching UEM's users).
    #[arg(long, default_value_t = 25)]
    users: usize,
    /// Incidents in ServiceNow.
    #[arg(long, default_value_t = 20)]
    incidents: usize,
    /// Finished support sessions in BeyondTrust (over the last 48 hours).
    #[arg(long, default_value_t = 30)]
    sessions: usize,
    /// Access requests waiting in the identity system.
    #[arg(long, default_value_t = 5)]
    access_requests: usize,
    /// First port (each simulator takes the next); 0 picks free ones.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut next = args.port;
    let mut addr = || {
        let a = SocketAddr::new(args.bind, next);
        if next != 0 {
            next += 1;
        }
        a
    };
    let want = |w: Which| args.which == Which::All || args.which == w;
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    if want(Which::Uem) {
        let cfg = UemConfig::default();
        let uem = Uem::start_on(cfg.clone(), args.seed, args.devices, addr()).await?;
        println!("uem         {}/api  ({} devices)", uem.url(), args.devices);
        println!(
            "  basic {}:{} + aw-tenant-code {}; oauth {} id {} secret {}",
            cfg.username,
            cfg.password,
            cfg.tenant_code,
            uem.token_url(),
            cfg.client_id,
            cfg.client_secret
        );
        keep.push(Box::new(uem));
    }
    if want(Which::Servicenow) {
        let cfg = ServiceNowConfig::default();
        let sn = ServiceNow::start_on(cfg.clone(), args.seed, args.users, args.incidents, addr())
            .await?;
        println!(
            "servicenow  {}/api/now/table  ({} users, {} incidents)",
            sn.url(),
            args.users,
            args.incidents
        );
        println!(
            "  basic {}:{}; oauth {}/oauth_token.do id {} secret {}",
            cfg.username,
            cfg.password,
            sn.url(),
            cfg.client_id,
            cfg.client_secret
        );
        keep.push(Box::new(sn));
    }
    if want(Which::Slack) {
        let slack = Slack::start_on(SlackConfig::default(), addr()).await?;
        for c in &SlackConfig::default().channels {
            println!("slack       #{c}: {}", slack.webhook_url(c));
        }
        keep.push(Box::new(slack));
    }
    if want(Which::Beyondtrust) {
        let cfg = BtConfig::default();
        let bt = BeyondTrust::start_on(cfg.clone(), args.seed, args.sessions, addr()).await?;
        println!(
            "beyondtrust {}/api/reporting  ({} sessions)",
            bt.url(),
            args.sessions
        );
        println!(
            "  oauth {}/oauth2/token id {} secret {}",
            bt.url(),
            cfg.client_id,
            cfg.client_secret
        );
        keep.push(Box::new(bt));
    }
    if want(Which::Mtd) {
        let cfg = MtdConfig::default();
        let mtd = Mtd::start_on(cfg.clone(), addr()).await?;
        println!("mtd         {}/api/v1/devices", mtd.url());
        println!(
            "  x-api-key {}; risk webhooks signed with {}",
            cfg.api_key, cfg.webhook_secret
        );
        keep.push(Box::new(mtd));
    }
    if want(Which::Identity) {
        let cfg = IdentityConfig::default();
        let idm = Identity::start_on(cfg.clone(), args.seed, args.access_requests, addr()).await?;
        println!(
            "identity    {}/api/access-requests  ({} pending)",
            idm.url(),
            args.access_requests
        );
        println!("  bearer {}", cfg.token);
        keep.push(Box::new(idm));
    }
    println!(
        "inspect: GET <url>/_sim/requests, GET <url>/_sim/state; faults: POST <url>/_sim/faults"
    );
    println!("serving until Ctrl-C");
    tokio::signal::ctrl_c().await?;
    drop(keep);
    Ok(())
}
