//! Attaching the programs: tcx links on bridges and uplinks (pinned), the endpoint
//! filter (clsact, unpinned), XDP, and the socket hooks on the cgroup root; detaching.

use super::*;

/// Priority of the endpoint filter in the clsact ingress hook (first to run).
pub(super) const ENDPOINT_TC_PRIORITY: u16 = 1;

/// True if `err` or one of its sources is an OS error `errno`.
pub(super) fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

pub(super) fn link_err(ifname: &str, source: LinkError) -> DatapathError {
    DatapathError::Link {
        ifname: ifname.to_owned(),
        source,
    }
}

impl Datapath {
    /// Attaches the endpoint-facing tc ingress program to `ifname`.
    pub fn attach_tc_ingress(&mut self, ifname: &str, ifindex: u32) -> Result<Attachment> {
        self.attach_tc(Hook::TcIngress, ifname, ifindex)
    }

    /// Attaches the tc program of `hook` to `ifname` (ingress or egress as the hook
    /// says) with tcx (a bpf_link, kernel ≥ 6.6) and pins the link. An existing pinned
    /// attachment is kept, or switched to this datapath's program if it was just
    /// (re)loaded.
    pub fn attach_tc(&mut self, hook: Hook, ifname: &str, ifindex: u32) -> Result<Attachment> {
        let pin = self.pins.link(hook, ifname, ifindex);
        let program = tc_program(hook);
        let attach_type = match hook {
            Hook::UplinkEgress => TcAttachType::Egress,
            _ => TcAttachType::Ingress,
        };
        let prog = &mut self.tc[tc_slot(hook)];
        let attach_err = |source| DatapathError::Attach {
            program,
            ifname: ifname.to_owned(),
            source,
        };
        if let Some(old) = open_pinned_link(&pin)? {
            if self.origin == Origin::Adopted {
                return Ok(Attachment::Adopted);
            }
            let link = SchedClassifierLink::try_from(FdLink::from(old))
                .map_err(|source| link_err(ifname, source))?;
            let id = prog.attach_to_link(link).map_err(attach_err)?;
            let link = prog.take_link(id).map_err(attach_err)?;
            pin_link(
                FdLink::try_from(link).map_err(|source| link_err(ifname, source))?,
                &pin,
            )?;
            return Ok(Attachment::Replaced);
        }
        let id = prog.attach(ifname, attach_type).map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        pin_link(
            FdLink::try_from(link).map_err(|source| link_err(ifname, source))?,
            &pin,
        )?;
        Ok(Attachment::Attached)
    }

    /// Attaches the socket-address hooks (host-local access to published ports) to the
    /// root of the cgroup v2 hierarchy at `cgroup_root`, so they see every process's
    /// sockets, and pins the links (`cgroup/<program>`). Existing pinned links are
    /// kept, or replaced by fresh ones when the programs were just (re)loaded. Other
    /// programs on the same hooks (systemd's, Docker's) keep running beside ours.
    pub fn attach_host_local(&mut self, cgroup_root: &Path) -> Result<Attachment> {
        let cgroup = fs::File::open(cgroup_root).map_err(|source| DatapathError::Cgroup {
            path: cgroup_root.to_owned(),
            source,
        })?;
        let dir = self.pins.cgroup_links_dir();
        fs::create_dir_all(&dir).map_err(|source| DatapathError::PinDir { path: dir, source })?;
        self.set_host_netns()?;
        let mut outcome = Attachment::Adopted;
        for (name, attach_type) in sock_hooks() {
            let pin = self.pins.cgroup_links_dir().join(name);
            if !self.pins.prog(name).exists() {
                // A program an older build's object lacks (`Program::optional`):
                // loaded without it, the datapath has no such hook, so a link a newer
                // build left goes too.
                remove_file_if_exists(&pin)?;
                continue;
            }
            if open_pinned_link(&pin)?.is_some() {
                if self.origin == Origin::Adopted {
                    continue;
                }
                // Reloaded programs: drop the old attachment (unpinned, its last
                // reference goes away) and attach the new program below.
                remove_file_if_exists(&pin)?;
            }
            let attach_err = |source| DatapathError::Attach {
                program: name,
                ifname: cgroup_root.display().to_string(),
                source,
            };
            let mut prog =
                CgroupSockAddr::from_pin(self.pins.prog(name), attach_type).map_err(|source| {
                    DatapathError::Program {
                        program: name,
                        source,
                    }
                })?;
            // A cgroup bpf_link always coexists with other programs on the hook (the
            // kernel treats links as multi-attach and refuses any attach flag on
            // them), so `Single` here means "no flags", not exclusive.
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(attach_err)?;
            let link = prog.take_link(id).map_err(attach_err)?;
            let link = FdLink::try_from(link)
                .map_err(|source| link_err(&cgroup_root.display().to_string(), source))?;
            pin_link(link, &pin)?;
            outcome = Attachment::Attached;
        }
        Ok(outcome)
    }

    /// Attaches the endpoint program to an endpoint's host-side device (veth host end
    /// or TAP) as a netlink cls_bpf filter under a clsact qdisc, not with tcx.
    ///
    /// Why: a tcx attach waits for an RCU grace period (`bpf_mprog_commit` calls
    /// `synchronize_rcu`), measured 10-22 ms here against ~0.25 ms for clsact + cls_bpf,
    /// and endpoint setup is latency-critical. The filter is not a bpf_link, so it is
    /// not pinned: it lives as long as the device (an endpoint's device is deleted with
    /// the endpoint), survives the daemon, and a restarted daemon finds it in place.
    /// Bridges and uplinks keep pinned tcx links ([`Datapath::attach_tc`]).
    pub fn attach_tc_endpoint(&mut self, ifname: &str, ifindex: u32) -> Result<Attachment> {
        let _ = ifindex;
        let attach_err = |source| DatapathError::Attach {
            program: TC_INGRESS_PROG,
            ifname: ifname.to_owned(),
            source,
        };
        // Already present (e.g. a restart): fine; any real problem shows in the attach.
        let _ = qdisc_add_clsact(ifname);
        let options = || {
            TcAttachOptions::Netlink(NlOptions {
                priority: ENDPOINT_TC_PRIORITY,
                handle: TcHandle::from(1),
                ..Default::default()
            })
        };
        let prog = &mut self.tc[tc_slot(Hook::TcIngress)];
        let outcome = match prog.attach_with_options(ifname, TcAttachType::Ingress, options()) {
            Ok(id) => Ok((id, Attachment::Attached)),
            Err(e) if has_errno(&e, libc::EEXIST) => {
                if self.origin == Origin::Adopted {
                    return Ok(Attachment::Adopted);
                }
                // Reloaded programs: replace the old filter (found by its program name).
                let name = prog
                    .info()
                    .ok()
                    .and_then(|i| i.name_as_str().map(str::to_owned))
                    .unwrap_or_else(|| TC_INGRESS_PROG.to_owned());
                let _ = qdisc_detach_program(ifname, TcAttachType::Ingress, &name);
                let _ = qdisc_detach_program(ifname, TcAttachType::Ingress, TC_INGRESS_PROG);
                prog.attach_with_options(ifname, TcAttachType::Ingress, options())
                    .map(|id| (id, Attachment::Replaced))
            }
            Err(e) => Err(e),
        };
        let (id, attachment) = outcome.map_err(attach_err)?;
        let link = prog.take_link(id).map_err(attach_err)?;
        // Dropping the link would detach the filter; it must outlive this process.
        std::mem::forget(link);
        Ok(attachment)
    }

    /// Attaches the XDP program to `ifname` as a bpf_link (driver mode if `native`,
    /// otherwise generic/skb mode) and pins the link; same adoption rules as tc.
    pub fn attach_xdp(&mut self, ifname: &str, ifindex: u32, native: bool) -> Result<Attachment> {
        let pin = self.pins.link(Hook::Xdp, ifname, ifindex);
        let attach_err = |source| DatapathError::Attach {
            program: XDP_PROG,
            ifname: ifname.to_owned(),
            source,
        };
        if let Some(old) = open_pinned_link(&pin)? {
            if self.origin == Origin::Adopted {
                return Ok(Attachment::Adopted);
            }
            let link =
                XdpLink::try_from(FdLink::from(old)).map_err(|source| link_err(ifname, source))?;
            let id = self.xdp.attach_to_link(link).map_err(attach_err)?;
            let link = self.xdp.take_link(id).map_err(attach_err)?;
            pin_link(
                FdLink::try_from(link).map_err(|source| link_err(ifname, source))?,
                &pin,
            )?;
            return Ok(Attachment::Replaced);
        }
        let mode = if native {
            XdpMode::Driver
        } else {
            XdpMode::Skb
        };
        let id = self
            .xdp
            .attach_to_if_index(ifindex, mode)
            .map_err(attach_err)?;
        let link = self.xdp.take_link(id).map_err(attach_err)?;
        pin_link(
            FdLink::try_from(link).map_err(|source| link_err(ifname, source))?,
            &pin,
        )?;
        Ok(Attachment::Attached)
    }

    /// Removes the attachment pins of device (`ifname`, `ifindex`) — after the device
    /// is deleted, its links are dead; dropping the pins frees them.
    pub fn forget_links(&mut self, ifname: &str, ifindex: u32) -> Result<()> {
        for hook in Hook::ALL {
            remove_file_if_exists(&self.pins.link(hook, ifname, ifindex))?;
        }
        Ok(())
    }

    /// Removes attachment pins whose device (name and ifindex) no longer exists in
    /// `live`; returns how many were removed.
    pub fn sweep_link_pins(&mut self, live: &[crate::netlink::Link]) -> Result<usize> {
        let dir = self.pins.links_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(DatapathError::Remove { path: dir, source }),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // <hook>:<ifindex>:<ifname>
            let mut parts = name.splitn(3, ':');
            let (_, index, ifname) = (parts.next(), parts.next(), parts.next());
            let alive = match (index.and_then(|i| i.parse::<u32>().ok()), ifname) {
                (Some(i), Some(n)) => live.iter().any(|l| l.index == i && l.name == n),
                _ => false,
            };
            if !alive {
                remove_file_if_exists(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
