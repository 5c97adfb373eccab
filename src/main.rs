//! The `tern` command: parses flags, loads the configuration, runs the broker until SIGINT or
//! SIGTERM. Errors reach the user here, with `anyhow` context.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tern::config::LogFormat;
use tern::{Broker, Config};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tern, an MQTT 3.1.1 and 5.0 broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file: TOML (see config/tern.toml for every key), or a Mosquitto 2.x
    /// mosquitto.conf (a `.conf` name, or Mosquitto syntax), run as it is.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// With a Mosquitto file: start even though some of its lines have no equivalent in Tern
    /// that keeps who may connect and what is delivered (they are left out, and listed).
    #[arg(long, global = true)]
    ignore_unsupported: bool,
    /// Port of the MQTT listener (overrides `listener.port`), like `mosquitto -p`.
    #[arg(short, long, value_name = "N")]
    port: Option<u16>,
    /// Address of the MQTT listener (overrides `listener.bind`).
    #[arg(short, long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// Port of the HTTP listener for /metrics, /health and /ready (overrides `http.port`; 0:
    /// any free port, logged).
    #[arg(long, value_name = "N")]
    http_port: Option<u16>,
    /// Log filter (overrides `log.level`; `RUST_LOG` overrides both): error, warn, info, debug,
    /// trace, or directives such as `tern=debug`.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks the configuration (FILE, or --config) and prints the effective settings
    /// (file, environment and flags merged), without starting.
    CheckConfig {
        /// The file to check (instead of --config).
        file: Option<PathBuf>,
    },
    /// Prints the Tern TOML equivalent of a Mosquitto 2.x configuration file (each key under
    /// the Mosquitto lines it comes from), and on stderr every line that translates to
    /// something else or nothing. Exit status 2 when some line has no equivalent that keeps
    /// who may connect and what is delivered (unless --ignore-unsupported) or is invalid.
    ImportMosquitto {
        /// The Mosquitto file (include_dir lines are followed).
        file: PathBuf,
    },
    /// Writes a development CA, a server certificate (localhost, 127.0.0.1, ::1 and any
    /// --host) and a client certificate, with their keys, as PEM files into DIR (see
    /// certs/README.md). For trying TLS, not for production.
    GenCerts {
        /// Directory to write into (created if missing).
        dir: PathBuf,
        /// Another DNS name or IP address for the server certificate (repeatable).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
    },
    /// Manages a password file like `mosquitto_passwd`: adds or updates USER (asking for the
    /// password twice, or taking it from the command line with -b), or deletes it (-D). Writes
    /// `$7$` PBKDF2-SHA512 hashes, which Mosquitto 2.0 reads too.
    Passwd {
        /// Create (or overwrite) the file instead of updating it.
        #[arg(short = 'c')]
        create: bool,
        /// Batch mode: the password is the third argument.
        #[arg(short = 'b')]
        batch: bool,
        /// Delete USER.
        #[arg(short = 'D', conflicts_with_all = ["create", "batch"])]
        delete: bool,
        /// PBKDF2 iterations for new hashes.
        #[arg(short = 'I', long, default_value_t = tern::auth::passwd::DEFAULT_ITERATIONS,
              value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        iterations: u32,
        /// The password file.
        file: PathBuf,
        /// The user name.
        user: String,
        /// The password (with -b only).
        password: Option<String>,
    },
    /// Works on the persistence store (`[persistence] path`) while Tern is stopped.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Cluster mode (`[cluster]`): asks NATS about the cluster.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Prints the nodes (heartbeat, client ids each holds) and the streams and buckets with
    /// the NATS servers that replicate them, as NATS has them now. Exit status 0, or 2 when
    /// NATS cannot be asked.
    Status,
}

#[derive(Debug, Subcommand)]
enum StoreAction {
    /// Reads the whole store as Tern does at start, changes nothing, and reports what it holds
    /// and what it could not read. Exit status 0: all readable; 1: some records unreadable
    /// (Tern drops them at start, keeping the rest); 2: the store cannot be opened.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenCerts { dir, hosts }) = &cli.command {
        return match tern::certs::generate(dir, hosts) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tern: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Passwd {
        create,
        batch,
        delete,
        iterations,
        file,
        user,
        password,
    }) = &cli.command
    {
        let edit = PasswdEdit {
            create: *create,
            delete: *delete,
            iterations: *iterations,
        };
        return match passwd(&edit, file, user, *batch, password.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tern passwd: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::ImportMosquitto { file }) = &cli.command {
        return import_mosquitto(file, cli.ignore_unsupported);
    }
    let (config, notes) = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tern: {e:#}");
            return ExitCode::from(2);
        }
    };
    for n in &notes {
        eprintln!("tern: {n}");
    }
    match cli.command {
        Some(Command::CheckConfig { .. }) => {
            if let Err(e) = tern::auth::Auth::new(&config) {
                eprintln!("tern: {e}");
                return ExitCode::from(2);
            }
            println!("{config:#?}");
            println!("configuration OK");
            return ExitCode::SUCCESS;
        }
        Some(Command::Store {
            action: StoreAction::Check,
        }) => {
            let _ = init_logging(&config);
            return check_store(&config.persistence.path);
        }
        Some(Command::Cluster {
            action: ClusterAction::Status,
        }) => return cluster_status(&config.cluster),
        Some(
            Command::GenCerts { .. } | Command::Passwd { .. } | Command::ImportMosquitto { .. },
        )
        | None => {}
    }
    let log = init_logging(&config);
    match run(config, &cli, &log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tern cluster status`; see [`ClusterAction::Status`].
fn cluster_status(config: &tern::config::ClusterConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(tern::cluster::status(config)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern: [cluster]: {e}");
            ExitCode::from(2)
        }
    }
}

/// `tern store check`: prints what the store holds; see [`StoreAction::Check`].
fn check_store(path: &std::path::Path) -> ExitCode {
    if !path.exists() {
        eprintln!("tern: no store at {}", path.display());
        return ExitCode::from(2);
    }
    match tern::broker::check_store(path) {
        Ok(r) => {
            println!("store {}", path.display());
            println!("  retained messages:     {}", r.retained);
            println!("  persistent sessions:   {}", r.sessions);
            println!("  subscriptions:         {}", r.subscriptions);
            println!("  queued deliveries:     {}", r.queued);
            println!("  stored messages:       {}", r.messages);
            println!(
                "  obsolete records:      {} (deleted at the next start)",
                r.obsolete
            );
            println!(
                "  unreadable records:    {} (dropped at the next start; logged above)",
                r.unreadable
            );
            if let Some(bytes) = r.disk_bytes {
                println!("  size on disk:          {bytes} bytes");
            }
            if r.unreadable == 0 {
                println!("store OK");
                ExitCode::SUCCESS
            } else {
                println!("store readable, with damaged records");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::from(2)
        }
    }
}

/// `tern import-mosquitto FILE`: the TOML on stdout, the notes on stderr.
fn import_mosquitto(file: &std::path::Path, ignore_unsupported: bool) -> ExitCode {
    let translation = match tern::config::mosquitto::translate_file(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", translation.toml);
    for n in &translation.notes {
        if n.severity > tern::config::mosquitto::Severity::Info {
            eprintln!("tern: {n}");
        }
    }
    let refused = translation.refusals(ignore_unsupported).len();
    if refused > 0 {
        eprintln!(
            "tern: {refused} line(s) of {} cannot be translated as they stand (listed above){}",
            file.display(),
            ignore_hint(&translation)
        );
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// Tells what --ignore-unsupported would do, when it would help.
fn ignore_hint(t: &tern::config::mosquitto::Translation) -> &'static str {
    match t.refusals(true).is_empty() {
        true => "; --ignore-unsupported leaves them out",
        false => "",
    }
}

/// The configuration (file, environment, flags) and, for a Mosquitto file, the notes on the
/// lines it translates to something else or nothing (warnings, and errors let through by
/// --ignore-unsupported); a Mosquitto file with errors is refused, listing every one.
fn load_config(cli: &Cli) -> anyhow::Result<(Config, Vec<tern::config::mosquitto::Note>)> {
    let file = match &cli.command {
        Some(Command::CheckConfig { file: Some(f) }) => Some(f),
        _ => cli.config.as_ref(),
    };
    let (mut text, mut origin) = match file {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (String::new(), "<defaults>".to_string()),
    };
    let mut notes = Vec::new();
    if let Some(path) = file.filter(|p| tern::config::mosquitto::is_mosquitto(p, &text)) {
        let translation = tern::config::mosquitto::translate_file(path)?;
        let refused = translation.refusals(cli.ignore_unsupported);
        if !refused.is_empty() {
            let lines: Vec<String> = refused.iter().map(|n| n.to_string()).collect();
            // One `tern: ` line each, as main prints the first.
            anyhow::bail!(
                "{}\ntern: {} line(s) of {origin} cannot be translated as they stand{}",
                lines.join("\ntern: "),
                lines.len(),
                ignore_hint(&translation)
            );
        }
        notes = translation.warnings().cloned().collect();
        text = translation.toml;
        origin = format!("{origin} (translated from Mosquitto)");
    }
    let mut config = Config::from_toml_with_env(&text, &origin, std::env::vars())?;
    if (cli.port.is_some() || cli.bind.is_some()) && !config.listener.enabled {
        anyhow::bail!(
            "--port and --bind set [listener], which this configuration turns off (its listeners are [[listeners]])"
        );
    }
    if let Some(port) = cli.port {
        config.listener.port = port;
    }
    if let Some(bind) = cli.bind {
        config.listener.bind = bind;
    }
    if let Some(port) = cli.http_port {
        config.http.port = port;
    }
    if let Some(filter) = &cli.log {
        config.log.level = filter.clone();
    }
    config.validate("<command line>")?;
    Ok((config, notes))
}

/// Changes the log filter of the running process (SIGHUP).
type LogReload = reload::Handle<EnvFilter, Registry>;

/// The log filter: `RUST_LOG` if set, else `log.level`.
fn log_filter(config: &Config) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

fn init_logging(config: &Config) -> LogReload {
    let (filter, handle) = reload::Layer::new(log_filter(config));
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => registry.with(fmt.json()).init(),
        // Colour codes only for a terminal, not for journald or a log file.
        LogFormat::Text => registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init(),
    }
    handle
}

fn run(config: Config, cli: &Cli, log: &LogReload) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Before any socket: every connection is a file descriptor.
    tern::fds::raise_and_log(config.limits.max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        // A stop signal while starting (a cluster node retries NATS for up to a minute) ends
        // the start: the signals are ours from here on, so nothing else would act on them.
        let broker = tokio::select! {
            b = Broker::start(config) => b?,
            r = tokio::signal::ctrl_c() => {
                r.context("cannot watch SIGINT")?;
                tracing::info!("stopped while starting");
                return Ok(());
            }
            _ = term.recv() => {
                tracing::info!("stopped while starting");
                return Ok(());
            }
        };
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r.context("cannot watch SIGINT")?; break; }
                _ = term.recv() => break,
                _ = hup.recv() => reload(&broker, cli, log),
            }
        }
        tracing::info!("shutting down");
        broker.shutdown().await;
        Ok(())
    })
}

/// SIGHUP: reads the configuration again (file, environment, flags) and puts in force what can
/// change while running; a bad file changes nothing.
fn reload(broker: &Broker, cli: &Cli, log: &LogReload) {
    let config = match load_config(cli) {
        Ok((c, notes)) => {
            for n in notes {
                tracing::warn!("{n}");
            }
            c
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload refused; the running configuration stays");
            return;
        }
    };
    if std::env::var_os("RUST_LOG").is_none() {
        if let Err(e) = log.reload(log_filter(&config)) {
            tracing::warn!(error = %e, "log filter not reloaded");
        }
    }
    for key in broker.reload(config) {
        tracing::warn!(
            key,
            "changed, but only a restart applies it; the running value stays"
        );
    }
    tracing::info!("configuration reloaded");
}

/// What `tern passwd` is to do besides setting a password.
struct PasswdEdit {
    create: bool,
    delete: bool,
    iterations: u32,
}

/// `tern passwd`: edits `file` as `mosquitto_passwd` would.
fn passwd(
    edit: &PasswdEdit,
    file: &std::path::Path,
    user: &str,
    batch: bool,
    password: Option<&str>,
) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    use tern::auth::passwd::{Hash, PasswordFile};
    if user.contains(':') || user.is_empty() {
        bail!("a user name must be non-empty and must not contain ':'");
    }
    let mut pw = if edit.create {
        PasswordFile::default()
    } else {
        PasswordFile::load(file)?
    };
    if edit.delete {
        if !pw.remove(user) {
            bail!("user {user} is not in {}", file.display());
        }
        return Ok(pw.save(file)?);
    }
    let password = match (batch, password) {
        (true, Some(p)) => p.to_string(),
        (true, None) => bail!("-b needs the password as the third argument"),
        (false, Some(_)) => bail!("a password on the command line needs -b"),
        (false, None) => {
            let first = rpassword::prompt_password("Password: ").context("reading the password")?;
            let again =
                rpassword::prompt_password("Reenter password: ").context("reading the password")?;
            if first != again {
                bail!("passwords do not match");
            }
            first
        }
    };
    if password.is_empty() {
        bail!("empty passwords are not allowed");
    }
    pw.set(user, Hash::new(password.as_bytes(), edit.iterations));
    Ok(pw.save(file)?)
}
