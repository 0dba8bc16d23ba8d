//! The `switchyard` binary: `switchyard` runs a node; `switchyard token …` mints a token with the
//! configured HS256 secret (for scripts and the README's tour).

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use switchyard::auth::{MintClaims, Verifier};
use switchyard::settings::Settings;
use switchyard::startup::Application;

/// Fan-out allocates each mailbox message on a broker shard's thread and frees it on the
/// session's: glibc's malloc takes its slow path (`_int_malloc`, ~14 % of the server's CPU in a
/// 5,000-subscriber fan-out profile) for exactly that pattern; mimalloc's per-thread heaps with
/// deferred remote frees do not. See docs/benchmarks.md.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Multi-tenant realtime engine")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default).
    Serve,
    /// Print a token signed with the configured SWITCHYARD__AUTH__JWT_SECRET.
    Token {
        /// User id (`sub`).
        #[arg(long)]
        sub: String,
        /// Admin, Staff, Customer, Service or Operator.
        #[arg(long)]
        role: String,
        /// `tenantKey` (required for Admin, Staff and Customer).
        #[arg(long)]
        tenant: Option<String>,
        /// A customer's dining session (`sessionId`).
        #[arg(long)]
        session_id: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let settings = Settings::load()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => actix_web::rt::System::new().block_on(serve(settings)),
        Command::Token {
            sub,
            role,
            tenant,
            session_id,
            ttl_secs,
        } => {
            // Never generate a key here: a token signed with a throwaway key is useless.
            let (verifier, _) = Verifier::from_settings(&settings.auth, false)?;
            let now = jsonwebtoken::get_current_timestamp();
            let claims = MintClaims {
                sub,
                tenant_key: tenant,
                role,
                session_id,
                exp: now + ttl_secs,
                iat: now,
            };
            let token = verifier.mint(&claims).ok_or_else(|| {
                anyhow::anyhow!("RS256 is configured; mint tokens with your issuer")
            })?;
            verifier.verify(&token)?;
            println!("{token}");
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let handle = app.handle();
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        handle.shutdown().await;
    });
    app.run_until_stopped().await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT received"),
    }
}
