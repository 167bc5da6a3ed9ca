//! Refusing banned and denied clients in the kernel, before the handshake
//! (Linux; opt-in).
//!
//! [`NoResponseLayer::kernel_filter`] attaches a classic BPF program to a
//! listening socket. The kernel runs it on every packet that reaches the
//! socket, and drops the SYNs of the clients it names: they get no SYN-ACK,
//! so there is no accept, no task and no system call of this process for
//! them. Their connection attempts time out, exactly as behind a firewall
//! that drops; nothing is logged for them, since nothing of theirs reaches
//! the process. Everyone else is served as before.
//!
//! The program names:
//! - with [`only_from_peer`](crate::NoResponseLayerBuilder::only_from_peer) enforced,
//!   every peer outside its ranges and the trusted proxies, and nothing
//!   else (the peers let in are edges, never refused here);
//! - otherwise, the clients on the layer's ban list (an IPv4 address, or an
//!   IPv6 prefix of
//!   [`BanPolicy::ipv6_prefix`](crate::ban::BanPolicy::ipv6_prefix) bits),
//!   most recent bans first, and the networks the IP rules deny, while the
//!   rule is enforced with a drop (not in dry-run, not answering with a
//!   status);
//! - then, with the `crowdsec` feature, the addresses and ranges CrowdSec
//!   bans, the longest lasting first, while rule `crowdsec` drops. A single
//!   IPv6 address is left to user space: the kernel compares prefixes of at
//!   most 64 bits, and widening it would refuse its neighbours.
//!
//! It never refuses a trusted proxy, an `only_from_peer` peer, or an address
//! that an allow before a deny lets through: those are checked first and
//! kept, so a ban of an IPv6 /64 or a denied block that contains a proxy
//! refuses everyone in it but the proxy. An IPv6 address kept is kept with
//! its whole /64, which may leave a few more to user space, never fewer.
//!
//! It is kept in sync: every quarter second the ban list, the rules (after a
//! [`reload`](NoResponseLayer::reload)) and the expiry of the bans in it are
//! checked, and a changed program replaces the old one in one system call.
//!
//! # Capacity
//!
//! A classic BPF program holds at most 4,096 instructions. IPv4 addresses and
//! ranges are searched as a balanced tree, so the kernel holds up to
//! [`MAX_V4_RANGES`] of them at about a dozen comparisons a packet; IPv6
//! prefixes of up to 64 bits are compared one after another, up to
//! [`MAX_V6_PREFIXES`]. Up to 64 kept IPv4 ranges and 16 kept IPv6
//! prefixes come on top; a refusal that overlaps a kept network beyond
//! those is left to user space, and an `only_from_peer` list beyond them is
//! enforced at accept alone. Denied networks go in first, then bans from the
//! longest remaining. What does not fit, and longer IPv6 prefixes, is still
//! refused by the layer as before, in user space; each refresh logs how many
//! entries the kernel holds and how many it left out.
//!
//! # What it cannot see
//!
//! The kernel sees the TCP peer. Behind a proxy or load balancer every
//! client arrives from the proxy's address, which is never banned: the
//! filter then refuses only clients that connect directly, and the layer
//! refuses a banned client behind a proxy on each of its requests. Connections
//! already accepted inherit the program they were accepted with; the layer
//! closes a banned client's open connections itself.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use socket2::{SockFilter, Socket};

use crate::NoResponseLayer;
use crate::ban::BanList;
use crate::rules::RuleSet;

/// The most IPv4 addresses and ranges the kernel holds.
pub const MAX_V4_RANGES: usize = 600;
/// The most IPv6 prefixes the kernel holds.
pub const MAX_V6_PREFIXES: usize = 64;

/// How often the program is checked against the ban list and the rules.
const REFRESH: Duration = Duration::from_millis(250);

impl NoResponseLayer {
    /// Refuses the layer's banned and denied clients in the kernel, on
    /// `listener`, before their handshake completes; see the
    /// [module docs](crate::server::kernel_filter). Keeps the program in
    /// sync from a task on the current tokio runtime until the returned
    /// handle is dropped, which detaches it.
    ///
    /// ```no_run
    /// # async fn run(layer: tower_no_response::NoResponseLayer) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    /// let _filter = layer.kernel_filter(&listener)?; // keep it for as long as you serve
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// When called outside a tokio runtime, or when the kernel refuses the
    /// program (a kernel without socket filters).
    pub fn kernel_filter(&self, listener: &impl AsFd) -> io::Result<KernelFilter> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("kernel_filter needs a tokio runtime"))?;
        // A duplicate of the descriptor: the program is set on the socket
        // they share, and the task never holds a number the server may
        // close and reuse.
        let socket = Socket::from(listener.as_fd().try_clone_to_owned()?);
        let mut sync = Refresh::new(self.clone(), socket);
        let loaded = sync.refresh(Instant::now())?;
        let status = Arc::new(std::sync::Mutex::new(loaded));
        let shared = Arc::clone(&status);
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(REFRESH);
            loop {
                ticks.tick().await;
                if sync.stale(Instant::now()) {
                    match sync.refresh(Instant::now()) {
                        Ok(loaded) => *shared.lock().unwrap_or_else(|e| e.into_inner()) = loaded,
                        Err(error) => tracing::warn!(
                            target: "tower_no_response::kernel_filter",
                            %error,
                            "the kernel filter was not refreshed"
                        ),
                    }
                }
            }
        });
        Ok(KernelFilter { task, status })
    }
}

/// The handle [`NoResponseLayer::kernel_filter`] returns. Dropping it stops
/// the refreshes and detaches the program.
#[derive(Debug)]
pub struct KernelFilter {
    task: tokio::task::JoinHandle<()>,
    status: Arc<std::sync::Mutex<Loaded>>,
}

impl KernelFilter {
    /// What the program in the kernel holds now.
    #[must_use]
    pub fn loaded(&self) -> Loaded {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for KernelFilter {
    fn drop(&mut self) {
        // The task owns the refresher, whose own drop detaches the program
        // and closes the duplicate descriptor.
        self.task.abort();
    }
}

/// What a program holds: entries in the kernel, and those left to user space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Loaded {
    /// IPv4 addresses and ranges, after merging neighbours.
    pub v4_ranges: usize,
    /// IPv6 prefixes.
    pub v6_prefixes: usize,
    /// Entries that did not fit, or IPv6 prefixes longer than 64 bits: the
    /// layer still refuses them, in user space.
    pub left_out: usize,
    /// The program's length in instructions.
    pub instructions: usize,
    /// IPv4 ranges and IPv6 prefixes never refused: trusted proxies,
    /// `only_from_peer` peers, and the allows before a deny.
    pub kept: usize,
    /// Whether every peer outside the kept ones is refused (`only_from_peer`).
    pub only_from: bool,
}

/// The refresh task's state.
struct Refresh {
    layer: NoResponseLayer,
    socket: Socket,
    rules: Option<Arc<RuleSet>>,
    generation: Option<u64>,
    /// The generations of the rules that list the peers they refuse.
    peer_generations: Vec<u64>,
    /// When the first ban in the program runs out.
    expires: Option<Instant>,
}

impl Refresh {
    fn new(layer: NoResponseLayer, socket: Socket) -> Self {
        Self {
            layer,
            socket,
            rules: None,
            generation: None,
            peer_generations: Vec::new(),
            expires: None,
        }
    }

    fn stale(&self, now: Instant) -> bool {
        let rules = self.layer.rules();
        let generation = self.layer.ban_list().map(|b| b.generation());
        !self.rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, &rules))
            || generation != self.generation
            || self.expires.is_some_and(|e| e <= now)
            || peer_generations(&rules) != self.peer_generations
    }

    fn refresh(&mut self, now: Instant) -> io::Result<Loaded> {
        let rules = self.layer.rules();
        let bans = self.layer.ban_list();
        self.generation = bans.as_ref().map(BanList::generation);
        self.peer_generations = peer_generations(&rules);
        let (blocklist, expires) = Blocklist::gather(&rules, bans.as_ref(), now);
        self.rules = Some(rules);
        self.expires = expires;
        let program = blocklist.program();
        self.socket.attach_filter(&program)?;
        let loaded = Loaded {
            v4_ranges: blocklist.v4.len(),
            v6_prefixes: blocklist.v6.len(),
            left_out: blocklist.left_out,
            instructions: program.len(),
            kept: blocklist.keep_v4.len() + blocklist.keep_v6.len(),
            only_from: blocklist.keep_only,
        };
        tracing::info!(
            target: "tower_no_response::kernel_filter",
            v4_ranges = loaded.v4_ranges,
            v6_prefixes = loaded.v6_prefixes,
            left_out = loaded.left_out,
            kept = loaded.kept,
            only_from = loaded.only_from,
            "kernel filter loaded"
        );
        Ok(loaded)
    }
}

fn peer_generations(rules: &RuleSet) -> Vec<u64> {
    let listing = rules.enforced_peer_rules();
    listing.iter().map(|r| r.generation()).collect()
}

impl Drop for Refresh {
    fn drop(&mut self) {
        // Without its refreshes the program would go stale.
        let _ = self.socket.detach_filter();
    }
}

/// The addresses a program refuses, and those it must never refuse.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Blocklist {
    /// Inclusive ranges, sorted, neither overlapping nor touching.
    v4: Vec<(u32, u32)>,
    /// (prefix, mask) over an address's first 64 bits.
    v6: Vec<(u64, u64)>,
    /// Kept whatever else matches, checked first: edges, and the allows
    /// before a deny. IPv6 ones are kept by at most their first 64 bits,
    /// which may keep more, never less.
    keep_v4: Vec<(u32, u32)>,
    keep_v6: Vec<(u64, u64)>,
    /// Refuse everything that is not kept (`only_from_peer`).
    keep_only: bool,
    left_out: usize,
}

/// The most IPv4 ranges and IPv6 prefixes kept out of every refusal.
const MAX_KEEP_V4: usize = 64;
const MAX_KEEP_V6: usize = 16;

impl Blocklist {
    /// The denied networks first, then the bans from the longest remaining,
    /// as many as fit, with the rules' edges and allows kept out of them;
    /// and when the first ban in it runs out.
    fn gather(rules: &RuleSet, bans: Option<&BanList>, now: Instant) -> (Self, Option<Instant>) {
        let sets = rules.kernel_sets();
        if sets.keep_only {
            return (Self::keep_only(sets.keep), None);
        }
        let mut entries = sets.deny;
        let mut expires = None;
        if let Some(bans) = bans {
            let mut banned = bans.bans();
            banned.retain(|b| !rules.is_edge(b.ip));
            banned.sort_by_key(|b| std::cmp::Reverse(b.remaining));
            let v6_prefix = bans.ipv6_prefix();
            for ban in banned {
                let prefix = if ban.ip.is_ipv4() { 32 } else { v6_prefix };
                let net = IpNet::new(ban.ip, prefix).unwrap_or_else(|_| IpNet::from(ban.ip));
                entries.push(net);
                let ends = now + ban.remaining;
                expires = Some(expires.map_or(ends, |e: Instant| e.min(ends)));
            }
        }
        // Then what the custom rules refuse (CrowdSec's bans), the longest
        // lasting first; what does not fit is refused in user space.
        for rule in &sets.peer_rules {
            for (net, ends) in rule.nets(MAX_V4_RANGES + MAX_V6_PREFIXES) {
                entries.push(net);
                expires = Some(expires.map_or(ends, |e: Instant| e.min(ends)));
            }
        }
        (Self::fit(entries).keeping(&sets.keep), expires)
    }

    /// Takes `entries` in order while they fit.
    pub(crate) fn fit(entries: Vec<IpNet>) -> Self {
        let mut list = Self::default();
        let mut v4 = Vec::new();
        for net in entries {
            match net {
                IpNet::V4(n) if v4.len() < MAX_V4_RANGES => {
                    v4.push((n.network().to_bits(), n.broadcast().to_bits()));
                }
                IpNet::V6(n) if n.prefix_len() <= 64 && list.v6.len() < MAX_V6_PREFIXES => {
                    let prefix = v6_prefix(n, n.prefix_len());
                    if !list.v6.contains(&prefix) {
                        list.v6.push(prefix);
                    }
                }
                _ => list.left_out += 1,
            }
        }
        list.v4 = merge(v4);
        list
    }

    /// Keeps `keep` out of every refusal. What does not fit in the
    /// program is kept by leaving out every refusal that overlaps it.
    pub(crate) fn keeping(mut self, keep: &[IpNet]) -> Self {
        let (v4, v6) = split_keep(keep);
        let (fits_v4, over_v4) = v4.split_at(v4.len().min(MAX_KEEP_V4));
        let (fits_v6, over_v6) = v6.split_at(v6.len().min(MAX_KEEP_V6));
        let before = self.v4.len() + self.v6.len();
        self.v4
            .retain(|&(start, end)| !over_v4.iter().any(|&(s, e)| s <= end && start <= e));
        self.v6
            .retain(|&(p, m)| !over_v6.iter().any(|&(q, n)| (p ^ q) & (m & n) == 0));
        self.left_out += before - self.v4.len() - self.v6.len();
        self.keep_v4 = fits_v4.to_vec();
        self.keep_v6 = fits_v6.to_vec();
        self
    }

    /// Refuses every peer outside `keep`; when `keep` does not fit, refuses
    /// nothing, and the accept side refuses them instead.
    pub(crate) fn keep_only(keep: Vec<IpNet>) -> Self {
        let (v4, v6) = split_keep(&keep);
        if v4.len() > MAX_KEEP_V4 || v6.len() > MAX_KEEP_V6 {
            return Self {
                left_out: keep.len(),
                ..Self::default()
            };
        }
        Self {
            keep_v4: v4,
            keep_v6: v6,
            keep_only: true,
            ..Self::default()
        }
    }

    /// The classic BPF program; see [`Insn`] for what it is made of.
    pub(crate) fn program(&self) -> Vec<SockFilter> {
        self.instructions().iter().map(|i| i.filter()).collect()
    }

    pub(crate) fn instructions(&self) -> Vec<Insn> {
        let mut out = vec![
            // The IP version, from the first byte of the network header.
            Insn::LoadByte(NET),
            Insn::RightShift(4),
            Insn::JumpIfEqual(4, 1, 0),
        ];
        let otherwise = if self.keep_only { DROP } else { ACCEPT };
        let v4 = {
            let mut tree = vec![Insn::LoadWord(NET + 12)];
            // Kept: accepted at once. Past the kept ranges, the refused.
            let leaves = v4_tree(&self.keep_v4, ACCEPT, &mut tree);
            let refused_at = tree.len();
            if self.keep_only {
                tree.push(Insn::Return(DROP));
            } else {
                for leaf in v4_tree(&self.v4, DROP, &mut tree) {
                    tree[leaf] = Insn::Return(ACCEPT);
                }
            }
            for leaf in leaves {
                tree[leaf] =
                    Insn::Jump(u32::try_from(refused_at - leaf - 1).expect("a short program"));
            }
            tree
        };
        out.push(Insn::Jump(
            u32::try_from(v4.len()).expect("a short program"),
        ));
        out.extend(v4);
        // Not IPv4: IPv6, or anything else, which is let through.
        out.push(Insn::JumpIfEqual(6, 1, 0));
        out.push(Insn::Return(ACCEPT));
        let kept = self.keep_v6.iter().map(|&p| (p, ACCEPT));
        let refused = self.v6.iter().map(|&p| (p, DROP));
        for ((prefix, mask), verdict) in kept.chain(refused) {
            let (hi, lo) = ((prefix >> 32) as u32, prefix as u32);
            let (mask_hi, mask_lo) = ((mask >> 32) as u32, mask as u32);
            out.extend([
                Insn::LoadWord(NET + 8),
                Insn::And(mask_hi),
                Insn::JumpIfEqual(hi, 0, 4),
                Insn::LoadWord(NET + 12),
                Insn::And(mask_lo),
                Insn::JumpIfEqual(lo, 0, 1),
                Insn::Return(verdict),
            ]);
        }
        out.push(Insn::Return(otherwise));
        out
    }
}

/// An IPv6 network's first 64 bits, as (prefix, mask), for at most `len`
/// of them.
fn v6_prefix(n: ipnet::Ipv6Net, len: u8) -> (u64, u64) {
    let mask = u64::MAX
        .checked_shl(64 - u32::from(len.min(64)))
        .unwrap_or(0);
    ((n.network().to_bits() >> 64) as u64 & mask, mask)
}

/// An inclusive IPv4 range, as two addresses.
type V4Range = (u32, u32);
/// An IPv6 prefix's first 64 bits and their mask.
type V6Prefix = (u64, u64);

/// Sorted ranges with overlapping and touching ones merged.
fn merge(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Networks to keep, as merged IPv4 ranges and IPv6 prefixes of at most
/// 64 bits (a longer one kept by its /64).
fn split_keep(keep: &[IpNet]) -> (Vec<V4Range>, Vec<V6Prefix>) {
    let mut v4 = Vec::new();
    let mut v6: Vec<(u64, u64)> = Vec::new();
    for net in keep {
        match net {
            IpNet::V4(n) => v4.push((n.network().to_bits(), n.broadcast().to_bits())),
            IpNet::V6(n) => {
                let prefix = v6_prefix(*n, n.prefix_len());
                if !v6.contains(&prefix) {
                    v6.push(prefix);
                }
            }
        }
    }
    (merge(v4), v6)
}

/// A balanced search over sorted, disjoint ranges, with the address in A.
/// Each node: below its range, the left subtree; above, the right; inside,
/// return `inside`. Every jump is short or an unconditional jump, whose
/// reach is not limited to 255 instructions. Returns where the searches
/// that found nothing end, for the caller to fill in.
fn v4_tree(ranges: &[(u32, u32)], inside: u32, out: &mut Vec<Insn>) -> Vec<usize> {
    if ranges.is_empty() {
        out.push(Insn::Return(ACCEPT));
        return vec![out.len() - 1];
    }
    let mid = ranges.len() / 2;
    let (start, end) = ranges[mid];
    out.push(Insn::JumpIfAtLeast(start, 0, 3));
    out.push(Insn::JumpIfAbove(end, 1, 0));
    out.push(Insn::Return(inside));
    let jump = out.len();
    out.push(Insn::Jump(0));
    let mut leaves = v4_tree(&ranges[..mid], inside, out);
    let left = out.len() - jump - 1;
    out[jump] = Insn::Jump(u32::try_from(left).expect("a short program"));
    leaves.extend(v4_tree(&ranges[mid + 1..], inside, out));
    leaves
}

/// Offsets from here reach the network (IP) header: Linux's `SKF_NET_OFF`.
const NET: u32 = (-0x10_0000_i32) as u32;
/// A socket filter returns how many bytes of the packet to keep.
const ACCEPT: u32 = u32::MAX;
const DROP: u32 = 0;

/// The few classic BPF instructions the program uses. Conditional jumps
/// carry their offsets for true and for false, counted from the next
/// instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insn {
    LoadWord(u32),
    LoadByte(u32),
    RightShift(u32),
    And(u32),
    Jump(u32),
    JumpIfEqual(u32, u8, u8),
    JumpIfAbove(u32, u8, u8),
    JumpIfAtLeast(u32, u8, u8),
    Return(u32),
}

impl Insn {
    fn filter(self) -> SockFilter {
        // Opcodes from Linux's `filter.h`: class | size | mode | operation.
        const LD_W_ABS: u16 = 0x20;
        const LD_B_ABS: u16 = 0x30;
        const ALU_RSH_K: u16 = 0x74;
        const ALU_AND_K: u16 = 0x54;
        const JMP_JA: u16 = 0x05;
        const JMP_JEQ_K: u16 = 0x15;
        const JMP_JGT_K: u16 = 0x25;
        const JMP_JGE_K: u16 = 0x35;
        const RET_K: u16 = 0x06;
        match self {
            Self::LoadWord(k) => SockFilter::new(LD_W_ABS, 0, 0, k),
            Self::LoadByte(k) => SockFilter::new(LD_B_ABS, 0, 0, k),
            Self::RightShift(k) => SockFilter::new(ALU_RSH_K, 0, 0, k),
            Self::And(k) => SockFilter::new(ALU_AND_K, 0, 0, k),
            Self::Jump(k) => SockFilter::new(JMP_JA, 0, 0, k),
            Self::JumpIfEqual(k, t, f) => SockFilter::new(JMP_JEQ_K, t, f, k),
            Self::JumpIfAbove(k, t, f) => SockFilter::new(JMP_JGT_K, t, f, k),
            Self::JumpIfAtLeast(k, t, f) => SockFilter::new(JMP_JGE_K, t, f, k),
            Self::Return(k) => SockFilter::new(RET_K, 0, 0, k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// Runs a program on a packet's network header, as the kernel would:
    /// true when the packet is kept.
    fn run(program: &[Insn], header: &[u8]) -> bool {
        let (mut a, mut pc, mut steps) = (0u32, 0usize, 0);
        let load = |at: u32, len: usize| -> u32 {
            let at = at.wrapping_sub(NET) as usize;
            header[at..at + len]
                .iter()
                .fold(0, |n, &b| (n << 8) | u32::from(b))
        };
        loop {
            steps += 1;
            assert!(steps < 1000, "a program that runs too long");
            let insn = program[pc];
            pc += 1;
            let branch = |cond: bool, t: u8, f: u8| usize::from(if cond { t } else { f });
            match insn {
                Insn::LoadWord(k) => a = load(k, 4),
                Insn::LoadByte(k) => a = load(k, 1),
                Insn::RightShift(k) => a >>= k,
                Insn::And(k) => a &= k,
                Insn::Jump(k) => pc += k as usize,
                Insn::JumpIfEqual(k, t, f) => pc += branch(a == k, t, f),
                Insn::JumpIfAbove(k, t, f) => pc += branch(a > k, t, f),
                Insn::JumpIfAtLeast(k, t, f) => pc += branch(a >= k, t, f),
                Insn::Return(k) => return k != DROP,
            }
        }
    }

    fn v4_header(ip: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0x45; 20];
        h[12..16].copy_from_slice(&ip.octets());
        h
    }

    fn v6_header(ip: Ipv6Addr) -> Vec<u8> {
        let mut h = vec![0x60; 40];
        h[8..24].copy_from_slice(&ip.octets());
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// The program tells the families by the packet's own header, and an
    /// IPv4 client reaches even a dual-stack socket as IPv4: no IPv6
    /// prefix, however wide, refuses it.
    #[test]
    fn no_ipv6_prefix_refuses_an_ipv4_client() {
        let list = Blocklist::fit(nets(&["::/8", "::/0", "2001:db8::/32"]));
        let program = list.instructions();
        for v4 in ["192.0.2.1", "127.0.0.1", "0.0.0.0", "255.255.255.255"] {
            assert!(run(&program, &v4_header(v4.parse().unwrap())), "{v4}");
        }
        assert!(!run(&program, &v6_header("2001:db8::1".parse().unwrap())));
    }

    #[test]
    fn the_program_refuses_exactly_the_listed_addresses() {
        let listed = nets(&[
            "198.51.100.0/24",
            "203.0.113.7/32",
            "203.0.113.8/32",
            "10.0.0.0/8",
            "2001:db8:1:2::/64",
            "2001:db8:ff00::/40",
        ]);
        let list = Blocklist::fit(listed.clone());
        assert_eq!(list.v4.len(), 3, "203.0.113.7 and .8 merge: {:?}", list.v4);
        let program = list.instructions();
        let refused = |ip: IpAddr| listed.iter().any(|n| n.contains(&ip));
        let mut probes: Vec<IpAddr> = [
            "198.51.99.255",
            "198.51.100.0",
            "198.51.100.255",
            "198.51.101.0",
            "203.0.113.6",
            "203.0.113.7",
            "203.0.113.8",
            "203.0.113.9",
            "9.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "11.0.0.0",
            "0.0.0.0",
            "255.255.255.255",
            "127.0.0.1",
            "2001:db8:1:2::1",
            "2001:db8:1:2:ffff::",
            "2001:db8:1:3::1",
            "2001:db8:ff12::1",
            "2001:db8:fe00::1",
            "::1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        probes.extend((0..=255u8).map(|i| IpAddr::from([198, 51, 100, i])));
        for ip in probes {
            let header = match ip {
                IpAddr::V4(v4) => v4_header(v4),
                IpAddr::V6(v6) => v6_header(v6),
            };
            assert_eq!(run(&program, &header), !refused(ip), "{ip}");
        }
    }

    /// A full tree of single addresses: every listed one refused, their
    /// neighbours kept, every jump within reach, the whole program within
    /// the kernel's 4,096 instructions.
    #[test]
    fn a_full_program_fits_and_searches_correctly() {
        let addresses: Vec<u32> = (0..MAX_V4_RANGES as u32 + 50)
            .map(|i| 0x0a00_0000 + i * 7)
            .collect();
        let mut listed: Vec<IpNet> = addresses
            .iter()
            .map(|&a| IpNet::from(IpAddr::V4(Ipv4Addr::from_bits(a))))
            .collect();
        listed.extend((0..MAX_V6_PREFIXES as u16 + 3).map(|i| {
            IpNet::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 0)),
                48,
            )
            .unwrap()
        }));
        let list = Blocklist::fit(listed);
        assert_eq!(list.v4.len(), MAX_V4_RANGES);
        assert_eq!(list.v6.len(), MAX_V6_PREFIXES);
        assert_eq!(list.left_out, 53);
        let program = list.instructions();
        assert!(program.len() <= 4096, "{} instructions", program.len());
        for &a in &addresses[..MAX_V4_RANGES] {
            assert!(!run(&program, &v4_header(Ipv4Addr::from_bits(a))), "{a:x}");
            assert!(
                run(&program, &v4_header(Ipv4Addr::from_bits(a + 1))),
                "{:x}",
                a + 1
            );
        }
        let in_kernel = Ipv6Addr::new(0x2001, 0xdb8, 5, 9, 0, 0, 0, 1);
        assert!(!run(&program, &v6_header(in_kernel)));
        let left_to_user_space =
            Ipv6Addr::new(0x2001, 0xdb8, MAX_V6_PREFIXES as u16, 0, 0, 0, 0, 1);
        assert!(run(&program, &v6_header(left_to_user_space)));
    }

    #[test]
    fn an_empty_list_keeps_everything() {
        let program = Blocklist::default().instructions();
        assert!(run(&program, &v4_header(Ipv4Addr::LOCALHOST)));
        assert!(run(&program, &v6_header(Ipv6Addr::LOCALHOST)));
        assert!(run(&program, &[0x10; 40]), "not IP: kept");
    }
}
