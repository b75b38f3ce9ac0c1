//! The checker: turns the simulator's ledger, the samples, the probes and the fault runs into
//! violations (each with the evidence to diagnose it) and the summary table.
//!
//! Violations: heights with two published blocks, rewinds, broken links, wedges (no new block
//! for [`WEDGE_MS`] while etcd has quorum, a healthy caught-up candidate exists and no stopped
//! election or leader override is in force), sidecars that gave no answer on a listener for
//! longer than its bound while neither SIGKILLed nor SIGSTOPped, a sidecar whose own watchdog
//! (`/healthz`) reports it stuck, faults the harness could not remove, and a cluster that does not settle on one producing sequencer once every fault is
//! gone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use op_node_sim::{InvariantReport, Ledger, PublishedBlock};

use crate::cluster::Run;
use crate::load::{Chan, Probe, Sample};
use crate::plan::{Kind, Mode, N};

/// No block for this long while a block was possible is a wedge.
pub const WEDGE_MS: u64 = 15_000;
/// Detailed diagnoses printed per violation category (the rest are listed).
const DETAILED: usize = 3;
/// Log lines printed per sidecar per diagnosis.
const LOG_LINES: usize = 45;

/// Everything a campaign recorded.
pub struct Evidence {
    pub mode: Mode,
    pub seed: u64,
    pub planned: usize,
    /// Wall ms when the first fault could start (a leader was producing) and when load stopped.
    pub t0_ms: u64,
    pub end_ms: u64,
    pub runs: Vec<Run>,
    pub samples: Vec<Sample>,
    pub probes: Vec<Probe>,
    /// (sidecar, from, to): SIGKILLed or SIGSTOPped, not expected to answer.
    pub excused: Vec<(usize, u64, u64)>,
    pub ledger: Ledger,
    pub report: InvariantReport,
    /// Sidecar `i`'s log file.
    pub logs: Vec<PathBuf>,
    /// Faults the harness could not remove, and similar failures of the run itself.
    pub harness: Vec<String>,
    /// Set when the cluster did not settle on one producing sequencer after the last fault.
    pub final_problem: Option<String>,
    /// `<prefix>/head` at the end of the run (raw JSON), if it could be read.
    pub committed_head: Option<String>,
}

pub struct Violation {
    pub what: &'static str,
    pub at_ms: u64,
    pub summary: String,
}

pub struct Outcome {
    pub violations: Vec<Violation>,
    /// Summary table, then every violation with its diagnosis.
    pub text: String,
}

impl Evidence {
    fn rel(&self, ms: u64) -> String {
        format!("+{:.1}s", (ms as f64 - self.t0_ms as f64) / 1000.0)
    }

    /// `+12.3s (23:51:02.123 UTC)`: campaign time and the wall time the sidecar logs use.
    fn when(&self, ms: u64) -> String {
        format!("{} ({} UTC)", self.rel(ms), utc(ms))
    }
}

pub fn check(ev: &Evidence) -> Outcome {
    let mut violations = Vec::new();
    let mut details = String::new();

    // === one block per height, no rewind, every block on its parent ===
    let by_height = blocks_by_height(&ev.ledger);
    for (k, (h, _)) in ev.report.heights_with_multiple_blocks.iter().enumerate() {
        let blocks = by_height.get(h).cloned().unwrap_or_default();
        let at = blocks.iter().map(|b| b.unix_ms).min().unwrap_or(ev.t0_ms);
        let parts: Vec<String> = blocks
            .iter()
            .map(|b| {
                format!(
                    "{} by {} at {}",
                    short(&b.hash),
                    b.producer,
                    ev.rel(b.unix_ms)
                )
            })
            .collect();
        let summary = format!("height {h}: {}", parts.join(", "));
        if k < DETAILED {
            let _ = writeln!(
                details,
                "\n### FORK at height {h}, first block at {}\n  {summary}",
                ev.when(at)
            );
            details.push_str(&context(ev, at.saturating_sub(12_000), at + 2_000));
        }
        violations.push(Violation {
            what: "two blocks at one height",
            at_ms: at,
            summary,
        });
    }
    for (k, r) in ev.report.rewinds.iter().enumerate() {
        let at = find(&ev.ledger, &r.to_hash)
            .or_else(|| find(&ev.ledger, &r.from_hash))
            .map_or(ev.t0_ms, |b| b.unix_ms);
        let summary = format!(
            "{} rewound from {}:{} to {}:{}",
            r.node,
            r.from_number,
            short(&r.from_hash),
            r.to_number,
            short(&r.to_hash)
        );
        if k < DETAILED {
            let _ = writeln!(details, "\n### REWIND near {}\n  {summary}", ev.when(at));
            details.push_str(&context(ev, at.saturating_sub(12_000), at + 2_000));
        }
        violations.push(Violation {
            what: "rewind",
            at_ms: at,
            summary,
        });
    }
    for b in &ev.report.broken_links {
        let at = find(&ev.ledger, &b.hash).map_or(ev.t0_ms, |p| p.unix_ms);
        violations.push(Violation {
            what: "broken link",
            at_ms: at,
            summary: format!(
                "height {} {} by {}: parent {} but height {} is {}",
                b.number,
                short(&b.hash),
                b.producer,
                short(&b.parent_hash),
                b.number.saturating_sub(1),
                short(&b.expected_parent)
            ),
        });
    }

    // === wedges ===
    let wedged = gaps(&ev.samples, |s| {
        s.quorum && !s.election_stopped && !s.override_on && !s.candidates.is_empty()
    });
    for (k, g) in wedged.iter().enumerate() {
        let s = sample_at(&ev.samples, g.from);
        let summary = format!(
            "no new block for {:.1} s from {} (height {}; ended by {}); caught-up healthy candidates then: {}",
            (g.to - g.from) as f64 / 1000.0,
            ev.rel(g.from),
            s.map_or(0, |s| s.max),
            g.ended_by,
            s.map_or_else(String::new, |s| names(&s.candidates)),
        );
        if k < DETAILED {
            let _ = writeln!(
                details,
                "\n### WEDGE from {} to {}\n  {summary}\n  {}",
                ev.when(g.from),
                ev.rel(g.to),
                committed_head_line(ev)
            );
            details.push_str(&context(
                ev,
                g.from.saturating_sub(5_000),
                g.from + WEDGE_MS,
            ));
        }
        violations.push(Violation {
            what: "wedge",
            at_ms: g.from,
            summary,
        });
    }

    // === sidecars that stopped answering ===
    for (k, (i, chan, from, len)) in silences(ev).into_iter().enumerate() {
        let summary = format!(
            "seq-{i} {}: no answer for {:.1} s from {} (bound {:.0} s) while neither killed nor SIGSTOPped",
            chan.name(),
            len as f64 / 1000.0,
            ev.rel(from),
            chan.bound_ms() as f64 / 1000.0
        );
        if k < DETAILED {
            let _ = writeln!(details, "\n### SILENT sidecar\n  {summary}");
            details.push_str(&context(ev, from.saturating_sub(3_000), from + len));
        }
        violations.push(Violation {
            what: "sidecar not answering",
            at_ms: from,
            summary,
        });
    }

    // === the sidecar's own watchdog ===
    for (k, (i, from, to, why)) in watchdog_failures(ev).into_iter().enumerate() {
        let summary = format!(
            "seq-{i} /healthz unhealthy from {} to {} while neither killed nor SIGSTOPped: {why}",
            ev.rel(from),
            ev.rel(to)
        );
        if k < DETAILED {
            let _ = writeln!(details, "\n### WATCHDOG\n  {summary}");
            details.push_str(&context(ev, from.saturating_sub(10_000), to));
        }
        violations.push(Violation {
            what: "watchdog: /healthz unhealthy",
            at_ms: from,
            summary,
        });
    }

    for h in &ev.harness {
        violations.push(Violation {
            what: "harness",
            at_ms: ev.end_ms,
            summary: h.clone(),
        });
    }
    if let Some(p) = &ev.final_problem {
        let _ = writeln!(
            details,
            "\n### DID NOT SETTLE after the last fault\n  {p}\n  {}",
            committed_head_line(ev)
        );
        details.push_str(&context(ev, ev.end_ms.saturating_sub(20_000), ev.end_ms));
        violations.push(Violation {
            what: "no single producing sequencer at the end",
            at_ms: ev.end_ms,
            summary: p.clone(),
        });
    }
    violations.sort_by_key(|v| v.at_ms);

    let mut text = summary_table(ev);
    let _ = writeln!(text, "\n-- info (not violations) --");
    text.push_str(&info(ev));
    let _ = writeln!(text, "\n-- violations: {} --", violations.len());
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &violations {
        *counts.entry(v.what).or_default() += 1;
    }
    for what in [
        "two blocks at one height",
        "rewind",
        "broken link",
        "wedge",
        "sidecar not answering",
        "watchdog: /healthz unhealthy",
        "harness",
        "no single producing sequencer at the end",
    ] {
        let _ = writeln!(
            text,
            "  {what:<42} {}",
            counts.get(what).copied().unwrap_or(0)
        );
    }
    for v in &violations {
        let _ = writeln!(text, "  [{}] {}: {}", ev.rel(v.at_ms), v.what, v.summary);
    }
    if !details.is_empty() {
        let _ = writeln!(text, "\n-- diagnosis --");
        text.push_str(&details);
    }
    Outcome { violations, text }
}

// === the summary table ===

/// The committed head at the end and whether it is a published block (on the chain).
fn committed_head_line(ev: &Evidence) -> String {
    let Some(raw) = &ev.committed_head else {
        return "committed head (<prefix>/head) at the end: absent or unreadable".into();
    };
    let parsed: Option<serde_json::Value> = serde_json::from_str(raw).ok();
    let (number, hash) = parsed
        .as_ref()
        .map(|v| (v["number"].as_u64(), v["hash"].as_str().map(str::to_string)))
        .unwrap_or((None, None));
    let verdict = match (number, hash) {
        (Some(n), Some(h)) => match find(&ev.ledger, &h) {
            Some(b) => format!("published by {} at {}", b.producer, ev.rel(b.unix_ms)),
            None => {
                let at: Vec<String> = ev
                    .ledger
                    .published
                    .iter()
                    .filter(|b| b.number == n)
                    .map(|b| format!("{} by {}", short(&b.hash), b.producer))
                    .collect();
                format!(
                    "NOT PUBLISHED (height {n} holds {}): no node has it",
                    if at.is_empty() {
                        "nothing".to_string()
                    } else {
                        at.join(", ")
                    }
                )
            }
        },
        _ => "unparsable".into(),
    };
    format!("committed head (<prefix>/head) at the end: {raw} -> {verdict}")
}

fn summary_table(ev: &Evidence) -> String {
    let mut out = String::new();
    let injected = ev.runs.iter().filter(|r| r.injected_ms.is_some()).count();
    let skipped = ev.runs.iter().filter(|r| r.skipped.is_some()).count();
    let _ = writeln!(
        out,
        "===== chaos summary: mode {}, seed {:#x}, {} faults planned, {injected} injected, {skipped} skipped, {:.0} s of faults and load, chain height {}",
        ev.mode.name(),
        ev.seed,
        ev.planned,
        (ev.end_ms.saturating_sub(ev.t0_ms)) as f64 / 1000.0,
        ev.report.max_height
    );
    let _ = writeln!(
        out,
        "failover = fault on the producing leader -> first block by another producer; next = fault -> next block by anyone (quorum loss: from its end); ms"
    );
    let _ = writeln!(out, "{}", committed_head_line(ev));
    let _ = writeln!(
        out,
        "{:<17} {:>4} {:>4} {:>4} {:>4} | {:>8} {:>6} {:>6} {:>6} {:>4} | {:>4} {:>6} {:>6} {:>6} {:>4}",
        "kind", "plan", "inj", "skip", "lead", "failover", "p50", "p99", "max", "none", "next", "p50", "p99", "max", "none"
    );
    for kind in Kind::ALL {
        let runs: Vec<&Run> = ev.runs.iter().filter(|r| r.fault.kind == kind).collect();
        if runs.is_empty() {
            continue;
        }
        let mut fail = Stat::default();
        let mut next = Stat::default();
        let mut on_leader = 0;
        for r in &runs {
            let Some(m) = measure(ev, r) else { continue };
            if m.on_leader {
                on_leader += 1;
            }
            if m.failover {
                fail.add(m.ms);
            } else {
                next.add(m.ms);
            }
        }
        let _ = writeln!(
            out,
            "{:<17} {:>4} {:>4} {:>4} {:>4} | {} | {}",
            kind.name(),
            runs.len(),
            runs.iter().filter(|r| r.injected_ms.is_some()).count(),
            runs.iter().filter(|r| r.skipped.is_some()).count(),
            on_leader,
            fail.row(8),
            next.row(4)
        );
    }
    out
}

#[derive(Default)]
struct Stat {
    vals: Vec<u64>,
    none: usize,
}

impl Stat {
    fn add(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.vals.push(v),
            None => self.none += 1,
        }
    }

    fn row(&mut self, w: usize) -> String {
        self.vals.sort_unstable();
        let p = |q: f64| -> String {
            if self.vals.is_empty() {
                return "-".into();
            }
            let i = ((q * self.vals.len() as f64).ceil() as usize).clamp(1, self.vals.len()) - 1;
            self.vals[i].to_string()
        };
        format!(
            "{:>w$} {:>6} {:>6} {:>6} {:>4}",
            self.vals.len(),
            p(0.5),
            p(0.99),
            p(1.0),
            self.none
        )
    }
}

struct Measure {
    on_leader: bool,
    /// Measured to a block by another producer (else to the next block by anyone).
    failover: bool,
    ms: Option<u64>,
}

/// The failover or next-block time of one injected fault.
fn measure(ev: &Evidence, r: &Run) -> Option<Measure> {
    let t = r.injected_ms?;
    let tip = ev
        .ledger
        .published
        .iter()
        .filter(|b| b.unix_ms <= t && b.number > 0)
        .max_by_key(|b| b.number);
    let producer = tip.map(|b| b.producer.clone());
    let producer_idx = producer
        .as_deref()
        .and_then(|p| p.strip_prefix("seq-"))
        .and_then(|s| s.parse::<usize>().ok());
    let on_leader = r.member.is_some() && r.member == producer_idx;
    let moves = match r.fault.kind {
        Kind::Transfer => r.fault.param == 0 || Some(r.fault.to) != producer_idx,
        k => on_leader && k.disables_leader(),
    };
    let from = match r.fault.kind {
        Kind::QuorumLoss => r.ended_ms.unwrap_or(t),
        _ => t,
    };
    let ms = ev
        .ledger
        .published
        .iter()
        .filter(|b| b.number > 0 && b.unix_ms > from)
        .filter(|b| !moves || Some(&b.producer) != producer.as_ref())
        .map(|b| b.unix_ms - from)
        .min();
    Some(Measure {
        on_leader,
        failover: moves,
        ms,
    })
}

fn info(ev: &Evidence) -> String {
    let mut out = String::new();
    for r in &ev.runs {
        if let Some(why) = &r.skipped {
            let _ = writeln!(
                out,
                "  #{} {} skipped: {why}",
                r.fault.id,
                r.fault.kind.name()
            );
        }
        if let Some(o) = r.outcome.lock().as_ref() {
            let _ = writeln!(
                out,
                "  #{} {} {}: {o}",
                r.fault.id,
                r.fault.kind.name(),
                r.note
            );
        }
    }
    for g in long_gaps(&ev.samples) {
        let _ = writeln!(out, "  {}", g.describe(ev));
    }
    // The design says a stopped election never halts a chain that has no leader; the
    // campaign's rules excuse these gaps, so they are reported here, not failed.
    let halted = gaps(&ev.samples, |s| {
        s.quorum && s.election_stopped && !s.override_on && !s.candidates.is_empty()
    });
    for g in halted {
        let _ = writeln!(
            out,
            "  no block for {:.1} s from {} while the election was stopped (design: a stopped election never halts the chain)",
            (g.to - g.from) as f64 / 1000.0,
            ev.rel(g.from)
        );
    }
    let overridden = gaps(&ev.samples, |s| {
        s.quorum && s.override_on && !s.candidates.is_empty()
    });
    for g in overridden {
        let _ = writeln!(
            out,
            "  no block for {:.1} s from {} while a leader override was in force",
            (g.to - g.from) as f64 / 1000.0,
            ev.rel(g.from)
        );
    }
    for (i, path) in ev.logs.iter().enumerate() {
        let _ = writeln!(out, "  seq-{i} log: {}", path.display());
    }
    let _ = writeln!(
        out,
        "  load (calls / unanswered / slowest answer ms), per sidecar:"
    );
    for chan in Chan::ALL {
        let cells: Vec<String> = (0..N)
            .map(|i| {
                let ps: Vec<&Probe> = ev
                    .probes
                    .iter()
                    .filter(|p| p.sidecar == i && p.chan == chan)
                    .collect();
                let failed = ps.iter().filter(|p| !p.ok).count();
                let slowest = ps
                    .iter()
                    .filter(|p| p.ok)
                    .map(|p| p.end_ms.saturating_sub(p.start_ms))
                    .max()
                    .unwrap_or(0);
                format!("seq-{i} {}/{failed}/{slowest}", ps.len())
            })
            .collect();
        let _ = writeln!(out, "    {:<19} {}", chan.name(), cells.join("  "));
    }
    out
}

// === wedges ===

struct Gap {
    from: u64,
    to: u64,
    ended_by: &'static str,
}

/// Stretches longer than [`WEDGE_MS`] without a new highest block while `eligible` held
/// throughout (measured from the later of the last new block and the start of eligibility).
fn gaps(samples: &[Sample], eligible: impl Fn(&Sample) -> bool) -> Vec<Gap> {
    let mut out = Vec::new();
    let Some(first) = samples.first() else {
        return out;
    };
    let mut max = first.max;
    let mut last_progress = first.t_ms;
    let mut streak: Option<u64> = None;
    let mut open: Option<u64> = None;
    for s in samples {
        if s.max > max {
            max = s.max;
            last_progress = s.t_ms;
            if let Some(from) = open.take() {
                out.push(Gap {
                    from,
                    to: s.t_ms,
                    ended_by: "a new block",
                });
            }
        }
        if eligible(s) {
            let start = *streak.get_or_insert(s.t_ms);
            let from = start.max(last_progress);
            if open.is_none() && s.t_ms.saturating_sub(from) > WEDGE_MS {
                open = Some(from);
            }
        } else {
            streak = None;
            if let Some(from) = open.take() {
                out.push(Gap {
                    from,
                    to: s.t_ms,
                    ended_by: "a fault that excuses it",
                });
            }
        }
    }
    if let (Some(from), Some(last)) = (open, samples.last()) {
        out.push(Gap {
            from,
            to: last.t_ms,
            ended_by: "the end of the run (never)",
        });
    }
    out
}

/// A stretch without a new block longer than [`WEDGE_MS`], with the time each excuse held.
struct LongGap {
    from: u64,
    to: u64,
    height: u64,
    /// ms per reason, in the order of [`REASONS`].
    by_reason: [u64; 5],
    longest_eligible: u64,
    /// Why members were not candidates, at the middle of the longest "no candidate" stretch.
    no_candidate: Option<String>,
}

const REASONS: [&str; 5] = [
    "eligible",
    "etcd quorum lost",
    "election stopped",
    "override",
    "no caught-up healthy candidate",
];

fn reason(s: &Sample) -> usize {
    if !s.quorum {
        1
    } else if s.election_stopped {
        2
    } else if s.override_on {
        3
    } else if s.candidates.is_empty() {
        4
    } else {
        0
    }
}

impl LongGap {
    fn describe(&self, ev: &Evidence) -> String {
        let parts: Vec<String> = REASONS
            .iter()
            .zip(self.by_reason)
            .filter(|(_, ms)| *ms > 0)
            .map(|(r, ms)| format!("{r} {:.1} s", ms as f64 / 1000.0))
            .collect();
        format!(
            "no block for {:.1} s from {} (height {}): {}; longest eligible stretch {:.1} s{}",
            (self.to - self.from) as f64 / 1000.0,
            ev.rel(self.from),
            self.height,
            parts.join(", "),
            self.longest_eligible as f64 / 1000.0,
            self.no_candidate
                .as_ref()
                .map_or_else(String::new, |w| format!("; no candidate because {w}"))
        )
    }
}

/// Every stretch between new blocks longer than [`WEDGE_MS`], whatever excused it.
fn long_gaps(samples: &[Sample]) -> Vec<LongGap> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for i in 1..=samples.len() {
        let progressed = i == samples.len() || samples[i].max > samples[start].max;
        if !progressed {
            continue;
        }
        let end = i.min(samples.len() - 1);
        let (from, to) = (samples[start].t_ms, samples[end].t_ms);
        if to - from > WEDGE_MS {
            let mut by_reason = [0u64; 5];
            let mut longest_eligible = 0;
            let mut eligible_run = 0;
            // (length, first sample) of the current and of the longest "no candidate" run.
            let mut run = (0u64, start);
            let mut longest = (0u64, start);
            for j in start..end {
                let dt = samples[j + 1].t_ms - samples[j].t_ms;
                let r = reason(&samples[j]);
                by_reason[r] += dt;
                eligible_run = if r == 0 { eligible_run + dt } else { 0 };
                longest_eligible = longest_eligible.max(eligible_run);
                run = match (r, run.0) {
                    (4, 0) => (dt, j),
                    (4, len) => (len + dt, run.1),
                    _ => (0, j),
                };
                if run.0 > longest.0 {
                    longest = run;
                }
            }
            let middle = longest.1 + (longest.0 / 400) as usize;
            let no_candidate = (longest.0 > 0).then(|| {
                let s = &samples[middle.min(end)];
                (0..N)
                    .map(|m| {
                        let why = if s.faulted[m] {
                            "fault in force".to_string()
                        } else if s.crashed[m] {
                            "node crashed".to_string()
                        } else {
                            format!("head {} < {}", s.heads[m], s.max)
                        };
                        format!("seq-{m} {why}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            out.push(LongGap {
                from,
                to,
                height: samples[start].max,
                by_reason,
                longest_eligible,
                no_candidate,
            });
        }
        start = i;
    }
    out
}

fn sample_at(samples: &[Sample], t: u64) -> Option<&Sample> {
    samples.iter().find(|s| s.t_ms >= t).or(samples.last())
}

// === silences ===

/// (sidecar, listener, from, length) of every stretch without an answer beyond the bound,
/// not counting time the sidecar was killed or SIGSTOPped.
fn silences(ev: &Evidence) -> Vec<(usize, Chan, u64, u64)> {
    let mut out = Vec::new();
    for i in 0..N {
        let mut excused: Vec<(u64, u64)> = ev
            .excused
            .iter()
            .filter(|(s, _, _)| *s == i)
            .map(|(_, a, b)| (*a, *b))
            .collect();
        excused.sort_unstable();
        for chan in Chan::ALL {
            let mut answers: Vec<u64> = ev
                .probes
                .iter()
                .filter(|p| p.sidecar == i && p.chan == chan && p.ok)
                .map(|p| p.end_ms)
                .collect();
            answers.sort_unstable();
            let mut last = ev.t0_ms;
            for t in answers.into_iter().chain(std::iter::once(ev.end_ms)) {
                if t > last + chan.bound_ms() {
                    if let Some((from, len)) = longest_uncovered(last, t, &excused) {
                        if len > chan.bound_ms() {
                            out.push((i, chan, from, len));
                        }
                    }
                }
                last = last.max(t);
            }
        }
    }
    out
}

/// (sidecar, first, last, reason) of each run of `/healthz` answers other than 200 outside the
/// windows where the sidecar was killed or SIGSTOPped.
fn watchdog_failures(ev: &Evidence) -> Vec<(usize, u64, u64, String)> {
    let mut out = Vec::new();
    for i in 0..N {
        let excused = |t: u64| {
            ev.excused
                .iter()
                .any(|(s, a, b)| *s == i && *a <= t && t <= *b)
        };
        let mut probes: Vec<&Probe> = ev
            .probes
            .iter()
            .filter(|p| p.sidecar == i && p.chan == Chan::Healthz && p.ok)
            .collect();
        probes.sort_by_key(|p| p.end_ms);
        let mut open: Option<(u64, u64, String)> = None;
        for p in probes {
            match (&p.unhealthy, excused(p.end_ms)) {
                (Some(why), false) => match &mut open {
                    Some((_, last, _)) => *last = p.end_ms,
                    None => open = Some((p.end_ms, p.end_ms, why.clone())),
                },
                _ => {
                    if let Some((a, b, why)) = open.take() {
                        out.push((i, a, b, why));
                    }
                }
            }
        }
        if let Some((a, b, why)) = open {
            out.push((i, a, b, why));
        }
    }
    out
}

/// The longest part of `[a, b)` outside every window of `covered` (sorted by start).
fn longest_uncovered(a: u64, b: u64, covered: &[(u64, u64)]) -> Option<(u64, u64)> {
    let mut best: Option<(u64, u64)> = None;
    let mut cur = a;
    let mut consider = |from: u64, to: u64| {
        if to > from && best.is_none_or(|(_, len)| to - from > len) {
            best = Some((from, to - from));
        }
    };
    for &(s, e) in covered {
        if e <= cur || s >= b {
            continue;
        }
        consider(cur, s.min(b));
        cur = cur.max(e);
        if cur >= b {
            break;
        }
    }
    consider(cur, b);
    best
}

// === diagnosis ===

/// Faults in force and changed around `[from, to]`, who sequenced, and each sidecar's log.
fn context(ev: &Evidence, from: u64, to: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  faults in force between {} and {}:",
        ev.rel(from),
        ev.rel(to)
    );
    for r in ev.runs.iter().filter(|r| {
        r.injected_ms
            .is_some_and(|a| a <= to && r.ended_ms.is_none_or(|e| e >= from))
    }) {
        let _ = writeln!(out, "    {}", run_line(ev, r));
    }
    let _ = writeln!(
        out,
        "  fault changes from {} to {}:",
        ev.rel(from.saturating_sub(20_000)),
        ev.rel(to)
    );
    let mut changes: Vec<(u64, String)> = Vec::new();
    for r in &ev.runs {
        if let Some(a) = r.injected_ms {
            changes.push((
                a,
                format!(
                    "inject #{} {} on {} ({})",
                    r.fault.id,
                    r.fault.kind.name(),
                    r.target_name(),
                    r.note
                ),
            ));
        }
        if let Some(e) = r.ended_ms {
            changes.push((
                e,
                format!(
                    "remove #{} {} on {}",
                    r.fault.id,
                    r.fault.kind.name(),
                    r.target_name()
                ),
            ));
        }
    }
    changes.sort();
    for (t, c) in changes
        .iter()
        .filter(|(t, _)| *t + 20_000 >= from && *t <= to)
    {
        let _ = writeln!(out, "    {} {c}", ev.when(*t));
    }
    let _ = writeln!(
        out,
        "  sequencing nodes and heads (sampled every 200 ms, changes only):"
    );
    let mut last: Option<[bool; N]> = None;
    for s in ev
        .samples
        .iter()
        .filter(|s| s.t_ms + 8_000 >= from && s.t_ms <= to)
    {
        if last != Some(s.active) {
            let active: Vec<usize> = (0..N).filter(|&i| s.active[i]).collect();
            let _ = writeln!(
                out,
                "    {} active {} heads {:?} crashed {:?} candidates {} in force {:?}",
                ev.when(s.t_ms),
                names(&active),
                s.heads,
                s.crashed,
                names(&s.candidates),
                s.in_force
            );
            last = Some(s.active);
        }
    }
    let blocks: Vec<&PublishedBlock> = ev
        .ledger
        .published
        .iter()
        .filter(|b| b.unix_ms + 3_000 >= from && b.unix_ms <= to + 1_000)
        .collect();
    let _ = writeln!(out, "  published blocks in the window:");
    for b in blocks {
        let _ = writeln!(
            out,
            "    {} #{} {} parent {} by {}",
            ev.when(b.unix_ms),
            b.number,
            short(&b.hash),
            short(&b.parent_hash),
            b.producer
        );
    }
    for (i, path) in ev.logs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  seq-{i} log {} to {} (INFO and above, last {LOG_LINES} lines; file {}):",
            ev.rel(from.saturating_sub(3_000)),
            ev.rel(to),
            path.display()
        );
        for line in log_window(path, from.saturating_sub(3_000), to, LOG_LINES) {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

fn run_line(ev: &Evidence, r: &Run) -> String {
    format!(
        "#{} {} on {} ({}) injected {} removed {}",
        r.fault.id,
        r.fault.kind.name(),
        r.target_name(),
        r.note,
        r.injected_ms.map_or_else(|| "-".into(), |t| ev.rel(t)),
        r.ended_ms.map_or_else(|| "never".into(), |t| ev.rel(t)),
    )
}

/// Lines of a sidecar log stamped within `[from, to]` (lines without a stamp follow the
/// previous one), DEBUG lines left out, lines repeating one of the previous 8 line shapes
/// (text without stamp and digits) folded into a count, the last `max` of them, each cut to
/// 300 characters.
pub fn log_window(path: &std::path::Path, from: u64, to: u64, max: usize) -> Vec<String> {
    const WINDOW: usize = 8;
    let Ok(bytes) = std::fs::read(path) else {
        return vec![format!("<cannot read {}>", path.display())];
    };
    let text = String::from_utf8_lossy(&bytes);
    let shape = |line: &str| -> String {
        let body = line.split_once(' ').map_or(line, |(_, rest)| rest);
        body.chars().filter(|c| !c.is_ascii_digit()).collect()
    };
    let mut inside = false;
    let mut out: Vec<String> = Vec::new();
    let mut recent: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut folded = 0usize;
    for line in text.lines() {
        if let Some(t) = log_ms(line) {
            inside = t >= from && t <= to;
        }
        if !inside || line.contains(" DEBUG ") || line.contains(" TRACE ") {
            continue;
        }
        let sh = shape(line);
        if recent.contains(&sh) {
            folded += 1;
            continue;
        }
        if folded > 0 {
            out.push(format!("  ... {folded} similar line(s) folded"));
            folded = 0;
        }
        out.push(line.chars().take(300).collect());
        recent.push_back(sh);
        if recent.len() > WINDOW {
            recent.pop_front();
        }
    }
    if folded > 0 {
        out.push(format!("  ... {folded} similar line(s) folded"));
    }
    let skip = out.len().saturating_sub(max);
    out.split_off(skip)
}

/// The wall ms of a log line's leading RFC 3339 UTC stamp (`2026-11-21T23:52:01.123456Z`).
pub fn log_ms(line: &str) -> Option<u64> {
    let ts = line.split_whitespace().next()?;
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac: String = ts
        .get(20..)
        .unwrap_or("")
        .chars()
        .take_while(char::is_ascii_digit)
        .chain(std::iter::repeat('0'))
        .take(3)
        .collect();
    let ms: i64 = frac.parse().ok()?;
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + s;
    u64::try_from(secs * 1_000 + ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `HH:MM:SS.mmm` of a wall ms, UTC.
pub fn utc(ms: u64) -> String {
    let day = (ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3600,
        (day / 60) % 60,
        day % 60,
        ms % 1000
    )
}

fn blocks_by_height(ledger: &Ledger) -> BTreeMap<u64, Vec<PublishedBlock>> {
    let mut m: BTreeMap<u64, Vec<PublishedBlock>> = BTreeMap::new();
    for b in &ledger.published {
        m.entry(b.number).or_default().push(b.clone());
    }
    m
}

fn find<'a>(ledger: &'a Ledger, hash: &str) -> Option<&'a PublishedBlock> {
    ledger.published.iter().find(|b| b.hash == hash)
}

fn short(hash: &str) -> String {
    let h = hash.strip_prefix("0x").unwrap_or(hash);
    format!("0x{}", &h[..h.len().min(8)])
}

fn names(ix: &[usize]) -> String {
    if ix.is_empty() {
        return "none".into();
    }
    ix.iter()
        .map(|i| format!("seq-{i}"))
        .collect::<Vec<_>>()
        .join(",")
}
