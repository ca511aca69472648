//! The `netpath` command line: a thin client of the daemon's API (plus `daemon`, and
//! the commands that work without a daemon: `reset`, `stats`, `completions`).

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};
use netpath::{
    client::Client,
    config::Paths,
    daemon::{self, DaemonOptions},
    error::{UserError, one_line},
    model::{
        Endpoint, EndpointCreate, EndpointKind, EventFilter, EventType, FlowFilter, FlowKind,
        FlowProto, Mode, MonitorEvent, Network, NetworkCreate, NetworkPolicy, NetworkUpdate,
        PortPublish, TapCreate,
    },
    preflight, reset,
};
use serde::Serialize;

use crate::cli::{
    args::*,
    family,
    ops::{self, each, endpoints, inspect, list, list_endpoints, remove_endpoints},
    print,
    select::{self, Filter},
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            // One line: clap's message up to its usage block, lines joined.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("netpath: {message} — see 'netpath --help'");
            return ExitCode::from(2);
        }
    };
    if !matches!(cli.command, Command::Daemon { .. }) {
        // SAFETY: restoring the default SIGPIPE disposition before any thread exists, so
        // `netpath ... | head` ends quietly instead of panicking on a closed stdout. Never
        // for the daemon: there a write to a client that hung up must be an error of
        // that one request (Rust's runtime ignores SIGPIPE), not the end of the process.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if matches!(cli.command, Command::Daemon { .. }) {
        daemon::tune_allocator();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netpath: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netpath: {}", one_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let paths = Paths {
        state_dir: cli.paths.state_dir,
        socket: cli.paths.socket,
        bpffs: cli.paths.bpffs,
    };
    let client = Client::new(paths.socket.clone());
    // Every API call goes through here: daemon errors become one line with a hint.
    macro_rules! api {
        ($e:expr) => {
            $e.await.map_err(UserError::from)?
        };
    }
    match cli.command {
        Command::Daemon {
            reload,
            no_default_network,
            ephemeral_ports,
            docker_plugin_socket,
            no_docker_plugin,
            metrics_addr,
            metrics_public,
            socket_group,
        } => {
            daemon::run(DaemonOptions {
                paths,
                reload,
                default_network: !no_default_network,
                ephemeral_ports,
                docker_plugin_socket: (!no_docker_plugin).then_some(docker_plugin_socket),
                metrics_addr,
                metrics_public,
                socket_group,
            })
            .await?;
            Ok(())
        }
        Command::Network(cmd) => match cmd {
            NetworkCmd::Create {
                name,
                subnet,
                mode,
                gateway,
                uplink,
                mtu,
                no_masquerade,
                isolate,
                internal,
                egress_deny,
                egress_allow,
                host_access,
                profile,
                json,
            } => {
                let (subnet, subnet6) = family::by_family("subnet", &subnet)?;
                let (gateway, gateway6) = family::by_family("gateway", &gateway)?;
                let n = api!(client.create_network(&NetworkCreate {
                    name,
                    subnet,
                    subnet6,
                    gateway6,
                    mode: match mode {
                        ModeArg::Bridge => Mode::Bridge,
                        ModeArg::Routed => Mode::Routed,
                    },
                    gateway,
                    uplink,
                    mtu,
                    no_masquerade,
                    policy: NetworkPolicy {
                        isolate,
                        internal,
                        egress_deny,
                        egress_allow,
                        host_access: host_access.unwrap_or_default(),
                    },
                    profile: profile.map(Into::into),
                }));
                if json {
                    print::json(&n)
                } else {
                    print::networks(&[n]);
                    Ok(())
                }
            }
            NetworkCmd::Update {
                name,
                isolate,
                internal,
                egress_deny,
                egress_allow,
                clear_egress,
                host_access,
                profile,
                json,
            } => {
                fn list<T>(v: Vec<T>, clear: bool) -> Option<Vec<T>> {
                    (clear || !v.is_empty()).then_some(v)
                }
                let update = NetworkUpdate {
                    isolate,
                    internal,
                    egress_deny: list(egress_deny, clear_egress),
                    egress_allow: list(egress_allow, clear_egress),
                    host_access,
                    profile: profile.map(Into::into),
                };
                if update == NetworkUpdate::default() {
                    anyhow::bail!(
                        "nothing to change: give a rule (--isolate[=BOOL], --internal[=BOOL], --egress-deny, --egress-allow, --clear-egress, --host-access, --profile; see `netpath network update --help`)"
                    );
                }
                let n = api!(client.update_network(&name, &update));
                if json {
                    print::json(&n)
                } else {
                    print::networks(&[n]);
                    Ok(())
                }
            }
            NetworkCmd::Rm { names, force } => {
                each(&names, "networks", |name| {
                    let client = &client;
                    async move {
                        let n = client.remove_network(name, force).await?;
                        println!("removed network {}", n.name);
                        Ok(())
                    }
                })
                .await
            }
            NetworkCmd::Ls { out } => {
                let ns = api!(client.list_networks());
                list(&ns, out, |n: &Network| &n.name, print::networks)
            }
        },
        Command::Endpoint(cmd) => match cmd {
            EndpointCmd::Add {
                netns,
                pid,
                ifname,
                new,
            } => {
                // The daemon has its own working directory: send an absolute path.
                let netns = netns.map(std::path::absolute).transpose()?;
                let e = api!(client.add_endpoint(&EndpointCreate {
                    netns,
                    pid,
                    ifname: Some(ifname),
                    ..new.request()?
                }));
                print::endpoint(&e, new.json)
            }
            EndpointCmd::Rm(Ids { ids }) => {
                remove_endpoints(&client, &ids, None, |e| {
                    format!("removed endpoint {} ({})", e.id, e.primary_ip())
                })
                .await
            }
            EndpointCmd::Ls {
                network,
                mut listing,
            } => {
                if let Some(n) = network {
                    listing.filter.push(Filter {
                        key: "network".into(),
                        value: n,
                    });
                }
                list_endpoints(&client, &listing, None).await
            }
        },
        Command::Tap(cmd) => match cmd {
            TapCmd::Add {
                name,
                uid,
                gid,
                queues,
                new,
            } => {
                let e = api!(client.add_tap(&TapCreate {
                    name,
                    uid,
                    gid,
                    queues,
                    ..new.request()?
                }));
                print::endpoint(&e, new.json)
            }
            TapCmd::Rm(Ids { ids }) => {
                remove_endpoints(&client, &ids, Some(EndpointKind::Tap), |e| {
                    format!(
                        "removed tap {} {} ({})",
                        e.id,
                        e.host_ifname,
                        e.primary_ip()
                    )
                })
                .await
            }
            TapCmd::Ls(listing) => list_endpoints(&client, &listing, Some(EndpointKind::Tap)).await,
        },
        Command::Port(cmd) => match cmd {
            PortCmd::Publish {
                endpoint,
                specs,
                json,
            } => {
                // One request: all or none.
                let all = api!(client.publish_ports(&PortPublish {
                    endpoint,
                    spec: None,
                    specs,
                }));
                if json {
                    print::json(&all)
                } else {
                    print::ports(&all);
                    Ok(())
                }
            }
            PortCmd::Rm { what } => {
                // A lease id has a protocol and an address: `tcp/0.0.0.0:8080`.
                let (leases, endpoints): (Vec<&String>, Vec<&String>) =
                    what.iter().partition(|w| w.contains('/'));
                if leases.len() > 1 || endpoints.len() > 1 {
                    return Err(UserError::new(
                        "give one endpoint, one lease id (tcp/0.0.0.0:8080), or one of each",
                    )
                    .hint("`netpath port ls` lists the leases and their endpoints")
                    .into());
                }
                let gone = api!(client.unpublish(
                    endpoints.first().map(|s| s.as_str()),
                    leases.first().map(|s| s.as_str())
                ));
                for l in &gone {
                    println!("unpublished {} (endpoint {})", l.id, l.endpoint);
                }
                Ok(())
            }
            PortCmd::Ls { filter, out } => {
                let mut leases = api!(client.list_ports());
                if !filter.is_empty() {
                    let eps = api!(client.list_endpoints(None));
                    let network_of =
                        |id: &str| eps.iter().find(|e| e.id == id).map(|e| e.network.clone());
                    leases.retain(|l| select::port_matches(l, &filter, network_of));
                }
                list(&leases, out, |l| &l.id, print::ports)
            }
        },
        Command::Ls(EndpointListing { filter, out }) => {
            let networks = api!(client.list_networks());
            let endpoints = endpoints(&client, &filter, None).await?;
            if out.json {
                #[derive(Serialize)]
                struct All {
                    networks: Vec<Network>,
                    endpoints: Vec<Endpoint>,
                }
                print::json(&All {
                    networks,
                    endpoints,
                })
            } else if out.quiet {
                list(&endpoints, out, |e| &e.id, |_| {})
            } else {
                print::networks(&networks);
                println!();
                print::endpoints(&endpoints);
                Ok(())
            }
        }
        Command::Inspect { what } => inspect(&client, &what).await,
        Command::Reset { json } => {
            preflight::require_privileges("netpath reset")?;
            let report = reset::reset(&paths).await?;
            if json {
                print::json(&report)
            } else {
                println!(
                    "removed {} link(s){}{}, {} pin(s), state {}",
                    report.links_removed.len(),
                    if report.links_removed.is_empty() {
                        ""
                    } else {
                        ": "
                    },
                    print::some_names(&report.links_removed, 8),
                    report.pins_removed,
                    if report.state_removed {
                        "removed"
                    } else {
                        "absent"
                    }
                );
                Ok(())
            }
        }
        Command::Stats { json, all } => {
            let report = match client.stats().await {
                Ok(r) => r,
                Err(netpath::client::ClientError::DaemonDown { .. }) => ops::offline_stats(&paths)?,
                Err(e) => return Err(UserError::from(e).into()),
            };
            print::stats(report, all, json)
        }
        Command::Flows {
            endpoint,
            proto,
            kind,
            json,
        } => {
            let filter = FlowFilter {
                endpoint,
                proto: proto.map(|p| match p {
                    ProtoArg::Tcp => FlowProto::Tcp,
                    ProtoArg::Udp => FlowProto::Udp,
                    ProtoArg::Icmp => FlowProto::Icmp,
                }),
                kind: kind.map(|k| match k {
                    KindArg::Masq => FlowKind::Masq,
                    KindArg::Publish => FlowKind::Publish,
                    KindArg::Hairpin => FlowKind::Hairpin,
                }),
            };
            let flows = client.flows(&filter).await.map_err(UserError::from)?;
            print::flows(&flows, json)
        }
        Command::Monitor {
            kind,
            endpoint,
            trace_every,
            count,
            json,
        } => {
            let filter = EventFilter {
                kind: kind.map(|k| match k {
                    EventTypeArg::Drop => EventType::Drop,
                    EventTypeArg::Trace => EventType::Trace,
                }),
                endpoint,
                trace_every,
            };
            let mut seen = 0;
            let mut out = std::io::stdout().lock();
            let stream = client.events(&filter, |event| {
                let is_packet = !matches!(event, MonitorEvent::Lost { .. });
                let line = match json {
                    true => serde_json::to_string(&event).unwrap_or_default(),
                    false => print::event_line(&event),
                };
                // A closed stdout (`| head`) ends the stream.
                if std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes()).is_err()
                    || std::io::Write::flush(&mut out).is_err()
                {
                    return false;
                }
                seen += u64::from(is_packet);
                count.is_none_or(|n| seen < n)
            });
            tokio::select! {
                r = stream => r.map_err(UserError::from)?,
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        }
        Command::Top {
            interval,
            iterations,
            plain,
        } => {
            if !(0.1..=3600.0).contains(&interval) {
                anyhow::bail!("--interval {interval} is out of range — give 0.1 to 3600 seconds");
            }
            let every = std::time::Duration::from_secs_f64(interval);
            cli::top::run(&client, every, iterations, plain).await
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "netpath",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
    }
}
