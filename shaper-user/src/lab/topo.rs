//! The `sub` — `gw` — `net` lab topology.
//!
//! ```text
//!   sub (subscribers)          gw (the shaper gateway)            net (upstream)
//!   eth0 ───────── veth ────── sub0        up0 ────── veth ────── eth0
//!   198.18.0.2/24              198.18.0.1/24   198.19.0.1/24       198.19.0.2/24
//!   2001:db8:0::2/64           2001:db8:0::1/64 2001:db8:1::1/64   2001:db8:1::2/64
//!   default via gw             forwarding on (v4 + v6)             default via gw
//! ```
//!
//! Extra subscriber addresses (one per simulated subscriber) go on `sub`'s `eth0` with
//! [`Topology::add_sub_addr`]; they are inside the connected prefixes, so `gw` reaches them by
//! ARP/ND on `sub0` without extra routes. IPv6 DAD is off (`nodad`, `accept_dad=0`) so every
//! address works at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};

use super::netns::NetNs;

/// Subscriber-side interface in `sub`.
pub const SUB_IF: &str = "eth0";
/// Gateway interface toward the subscribers.
pub const GW_SUB_IF: &str = "sub0";
/// Gateway interface toward upstream.
pub const GW_UP_IF: &str = "up0";
/// Upstream-side interface in `net`.
pub const NET_IF: &str = "eth0";

/// `sub` eth0 address.
pub const SUB_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// `gw` sub0 address (the subscribers' default gateway).
pub const GW_SUB_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// `gw` up0 address.
pub const GW_UP_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// `net` eth0 address.
pub const NET_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
/// `sub` eth0 IPv6 address (2001:db8:0::2).
pub const SUB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// `gw` sub0 IPv6 address (2001:db8:0::1).
pub const GW_SUB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// `gw` up0 IPv6 address (2001:db8:1::1).
pub const GW_UP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// `net` eth0 IPv6 address (2001:db8:1::2).
pub const NET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

/// One of the four veth ends of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `sub`:`eth0`
    Sub,
    /// `gw`:`sub0`
    GwSub,
    /// `gw`:`up0`
    GwUp,
    /// `net`:`eth0`
    Net,
}

/// Three namespaces joined by two veth pairs; all deleted when dropped.
#[derive(Debug)]
pub struct Topology {
    /// Subscribers / modems.
    pub sub: NetNs,
    /// The gateway (where the data plane and HTB run).
    pub gw: NetNs,
    /// Upstream / providers.
    pub net: NetNs,
    /// ifindex of `gw`:`sub0`.
    pub gw_sub_ifindex: u32,
    /// ifindex of `gw`:`up0`.
    pub gw_up_ifindex: u32,
}

impl Topology {
    /// Build the topology; namespaces are named `{prefix}-{pid}-{n}-{sub,gw,net}`.
    ///
    /// On any error, whatever was created is deleted again (the guards drop).
    pub fn sub_gw_net(prefix: &str) -> Result<Topology> {
        let base = super::netns::unique_name(prefix);
        let sub = NetNs::new(&format!("{base}-sub"))?;
        let gw = NetNs::new(&format!("{base}-gw"))?;
        let net = NetNs::new(&format!("{base}-net"))?;

        for ns in [&sub, &gw, &net] {
            // New interfaces inherit `default`; `all` covers the ones that exist.
            for scope in ["all", "default"] {
                ns.sysctl(&format!("net.ipv6.conf.{scope}.accept_dad"), "0")?;
                ns.sysctl(&format!("net.ipv6.conf.{scope}.dad_transmits"), "0")?;
            }
        }
        gw.sysctl("net.ipv4.ip_forward", "1")?;
        gw.sysctl("net.ipv6.conf.all.forwarding", "1")?;

        // Create both pairs from gw, pushing the far end straight into its namespace.
        gw.run([
            "ip",
            "link",
            "add",
            GW_SUB_IF,
            "type",
            "veth",
            "peer",
            "name",
            SUB_IF,
            "netns",
            sub.name(),
        ])
        .context("veth gw:sub0 <-> sub:eth0")?;
        gw.run([
            "ip",
            "link",
            "add",
            GW_UP_IF,
            "type",
            "veth",
            "peer",
            "name",
            NET_IF,
            "netns",
            net.name(),
        ])
        .context("veth gw:up0 <-> net:eth0")?;

        let addrs: [(&NetNs, &str, String, String); 4] = [
            (&sub, SUB_IF, format!("{SUB_V4}/24"), format!("{SUB_V6}/64")),
            (
                &gw,
                GW_SUB_IF,
                format!("{GW_SUB_V4}/24"),
                format!("{GW_SUB_V6}/64"),
            ),
            (
                &gw,
                GW_UP_IF,
                format!("{GW_UP_V4}/24"),
                format!("{GW_UP_V6}/64"),
            ),
            (&net, NET_IF, format!("{NET_V4}/24"), format!("{NET_V6}/64")),
        ];
        for (ns, ifname, v4, v6) in &addrs {
            ns.run(["ip", "addr", "add", v4, "dev", ifname])?;
            ns.run(["ip", "-6", "addr", "add", v6, "dev", ifname, "nodad"])?;
        }
        for (ns, ifname, _, _) in &addrs {
            ns.run(["ip", "link", "set", "dev", ifname, "up"])?;
        }
        sub.run([
            "ip",
            "route",
            "add",
            "default",
            "via",
            &GW_SUB_V4.to_string(),
        ])?;
        sub.run([
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GW_SUB_V6.to_string(),
        ])?;
        net.run([
            "ip",
            "route",
            "add",
            "default",
            "via",
            &GW_UP_V4.to_string(),
        ])?;
        net.run([
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GW_UP_V6.to_string(),
        ])?;

        let gw_sub_ifindex = gw.ifindex(GW_SUB_IF)?;
        let gw_up_ifindex = gw.ifindex(GW_UP_IF)?;
        Ok(Topology {
            sub,
            gw,
            net,
            gw_sub_ifindex,
            gw_up_ifindex,
        })
    }

    /// Namespace and interface name of a link end.
    pub fn link(&self, link: Link) -> (&NetNs, &'static str) {
        match link {
            Link::Sub => (&self.sub, SUB_IF),
            Link::GwSub => (&self.gw, GW_SUB_IF),
            Link::GwUp => (&self.gw, GW_UP_IF),
            Link::Net => (&self.net, NET_IF),
        }
    }

    /// Add a subscriber address on `sub`:`eth0`. It must lie in 198.18.0.0/24 or
    /// 2001:db8:0::/64 (the sub-side prefixes) and is added with that prefix length (`nodad`).
    pub fn add_sub_addr(&self, addr: IpAddr) -> Result<()> {
        let spec = match addr {
            IpAddr::V4(a) => {
                if a.octets()[..3] != [198, 18, 0] {
                    bail!("{a} is not in the subscriber prefix 198.18.0.0/24");
                }
                format!("{a}/24")
            }
            IpAddr::V6(a) => {
                if a.segments()[..4] != [0x2001, 0xdb8, 0, 0] {
                    bail!("{a} is not in the subscriber prefix 2001:db8:0::/64");
                }
                format!("{a}/64")
            }
        };
        let mut args = vec!["ip", "addr", "add", &spec, "dev", SUB_IF];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.sub.run(args).map(|_| ())
    }

    /// Set the MTU of one link end.
    pub fn set_mtu(&self, link: Link, mtu: u32) -> Result<()> {
        let (ns, ifname) = self.link(link);
        ns.run(["ip", "link", "set", "dev", ifname, "mtu", &mtu.to_string()])
            .map(|_| ())
    }

    /// ifindex of any link end (read from `ip -j link`).
    pub fn ifindex(&self, link: Link) -> Result<u32> {
        let (ns, ifname) = self.link(link);
        ns.ifindex(ifname)
    }
}
