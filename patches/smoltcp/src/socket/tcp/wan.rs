//! promgate patch: WAN-mode loss recovery for the TCP sender.
//!
//! Upstream's sender keeps one RTT sample per flight, retransmits one segment on
//! the third duplicate ACK, ignores the SACK blocks it receives, and on a timeout
//! rewinds SND.NXT to SND.UNA (go-back-N). On a long lossy path a second loss in
//! a window then costs a timeout, and each timeout resends data the receiver holds.
//! This module replaces that, per socket, with:
//!
//! * a transmit log: one record per sent range, in sequence order, covering exactly
//!   [SND.UNA, SND.NXT) (data and FIN; the SYN stays with upstream's handshake
//!   timer), with its last send time, send count and state;
//! * a SACK scoreboard over that log (RFC 2018, RFC 6675), so the congestion
//!   window is checked against the pipe (bytes sent and not yet delivered, lost or
//!   SACKed) instead of SND.NXT − SND.UNA;
//! * RACK-TLP loss detection (RFC 8985): a segment is lost once a segment sent
//!   after it was delivered and a reordering window has passed; a tail loss probe
//!   gets an ACK out of the receiver when the last segments of a flight are lost;
//! * RTT samples in microseconds from never-retransmitted records (Karn);
//! * an RTO that marks what was not SACKed as lost and resends only that;
//! * a delivery-rate sampler (draft-cheng-iccrg-delivery-rate-estimation): each
//!   record keeps a snapshot of the connection's delivery counters from when it
//!   was sent, and each ACK yields a rate sample from the most recently sent
//!   record it newly delivered, for a model-based controller (BBR).
//!
//! Sending is driven by the scoreboard: lost ranges first (lowest sequence first),
//! then new data. SND.NXT (`remote_last_seq`) keeps its meaning, the highest
//! sequence number sent, and is never rewound.

use alloc::collections::VecDeque;
use core::fmt;

use super::congestion::RateSample;
use super::{PollAt, Socket, State};
use crate::time::{Duration, Instant};
use crate::wire::{TcpRepr, TcpSeqNumber};

/// RFC 8985: the worst-case delayed-ACK time added to the PTO with one segment out.
const TLP_DELAYED_ACK: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Sent (once or again) and not known to be delivered or lost.
    InFlight,
    /// Reported by a SACK block.
    Sacked,
    /// Deemed lost and not sent again since.
    Lost,
}

/// One sent range of sequence space.
#[derive(Debug, Clone, Copy)]
struct Record {
    start: TcpSeqNumber,
    /// Exclusive; counts the FIN if `fin`.
    end: TcpSeqNumber,
    fin: bool,
    sent_at: Instant,
    sends: u16,
    mark: Mark,
    /// Delivery-rate snapshot at the last send.
    snap: Snapshot,
}

/// The connection's delivery counters when a record was sent.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    /// Bytes delivered so far.
    delivered: u64,
    /// When `delivered` last grew.
    delivered_time: Instant,
    /// Send time of the most recently sent record delivered so far (the start
    /// of the send interval).
    first_sent_time: Instant,
    /// The sender was application-limited.
    app_limited: bool,
}

impl Record {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// The WAN-mode sender state of one connection.
pub(super) struct Recovery {
    log: VecDeque<Record>,
    /// Bytes in records marked `Sacked` and `Lost`.
    sacked: usize,
    lost: usize,
    /// Loss recovery ends when the cumulative ACK reaches this.
    recovery_point: Option<TcpSeqNumber>,
    /// The recovery was entered by an RTO, so cwnd slow-starts through it.
    rto_recovery: bool,
    consecutive_rtos: u8,
    rto_at: Option<Instant>,
    /// RACK reorder timer: the earliest time a record sent before the most
    /// recently delivered one would be deemed lost.
    rack_at: Option<Instant>,
    tlp_at: Option<Instant>,
    /// A probe is due: send one segment past the congestion window.
    probe_due: bool,
    /// A probe was sent and no data was delivered since.
    probe_out: bool,
    /// RACK: send time and end of the most recently sent delivered record.
    rack_sent: Option<(Instant, TcpSeqNumber)>,
    rack_rtt_us: u32,
    /// Highest SACKed sequence number, to notice reordering.
    fack: Option<TcpSeqNumber>,
    reordering_seen: bool,
    /// The MSS the congestion controller was last told.
    cc_mss: usize,
    /// Pacer: a token bucket in bytes, as of `pace_last`; it may run negative
    /// by the last segment sent.
    pace_tokens: i64,
    pace_last: Option<Instant>,
    /// Delivery-rate sampler: bytes delivered (ACKed or SACKed) over the
    /// connection, when that last grew, and the send time of the most recently
    /// sent record delivered.
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    /// Non-zero while application-limited: until `delivered` passes it, samples
    /// are marked app-limited (the data in flight then went out while the
    /// sender had nothing more to send).
    app_limited_until: u64,
    /// The last sample given to the controller, for tests.
    #[cfg(test)]
    last_sample: Option<RateSample>,
}

impl Recovery {
    pub(super) fn new() -> Recovery {
        Recovery {
            log: VecDeque::new(),
            sacked: 0,
            lost: 0,
            recovery_point: None,
            rto_recovery: false,
            consecutive_rtos: 0,
            rto_at: None,
            rack_at: None,
            tlp_at: None,
            probe_due: false,
            probe_out: false,
            rack_sent: None,
            rack_rtt_us: 0,
            fack: None,
            reordering_seen: false,
            cc_mss: 0,
            pace_tokens: 0,
            pace_last: None,
            delivered: 0,
            delivered_time: Instant::ZERO,
            first_sent_time: Instant::ZERO,
            app_limited_until: 0,
            #[cfg(test)]
            last_sample: None,
        }
    }

    /// Bytes the log covers: SND.NXT − SND.UNA in a data state.
    fn flight(&self) -> usize {
        match (self.log.front(), self.log.back()) {
            (Some(front), Some(back)) => back.end - front.start,
            _ => 0,
        }
    }

    /// RFC 6675 pipe: sent, and neither delivered (SACKed) nor lost; a lost range
    /// that was sent again counts again.
    pub(super) fn pipe(&self) -> usize {
        self.flight().saturating_sub(self.sacked + self.lost)
    }

    fn set_mark(&mut self, i: usize, mark: Mark) {
        let rec = &mut self.log[i];
        let len = rec.end - rec.start;
        match rec.mark {
            Mark::Sacked => self.sacked -= len,
            Mark::Lost => self.lost -= len,
            Mark::InFlight => {}
        }
        match mark {
            Mark::Sacked => self.sacked += len,
            Mark::Lost => self.lost += len,
            Mark::InFlight => {}
        }
        rec.mark = mark;
    }

    /// Split the record holding `at` so that a record starts at `at`; returns
    /// that record's index, or `log.len()` if `at` is past the log.
    fn split_at(&mut self, at: TcpSeqNumber) -> usize {
        let i = self.log.partition_point(|r| r.end <= at);
        if i < self.log.len() && self.log[i].start < at {
            let mut tail = self.log[i];
            tail.start = at;
            // A FIN sits at the end of its record, so only the tail keeps it.
            self.log[i].end = at;
            self.log[i].fin = false;
            self.log.insert(i + 1, tail);
            return i + 1;
        }
        i
    }

    /// The lowest lost record, if any.
    fn first_lost(&self) -> Option<&Record> {
        if self.lost == 0 {
            return None;
        }
        self.log.iter().find(|r| r.mark == Mark::Lost)
    }

    /// Record a transmission of `[seq, seq + len)` at `now`: a resend of logged
    /// ranges, new data past the log, or both.
    fn on_transmit(&mut self, now: Instant, seq: TcpSeqNumber, len: usize, fin: bool) {
        let end = seq + len;
        // Nothing in flight: the send and ACK intervals of the next sample start now.
        if self.log.is_empty() {
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        let snap = Snapshot {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            app_limited: self.app_limited_until != 0,
        };
        let log_end = self.log.back().map(|r| r.end);
        if let Some(log_end) = log_end
            && seq < log_end
        {
            // A resend: mark what it covers as in flight again.
            let first = self.split_at(seq);
            let stop = self.split_at(end.min(log_end));
            for i in first..stop {
                if self.log[i].mark != Mark::Sacked {
                    self.set_mark(i, Mark::InFlight);
                }
                let rec = &mut self.log[i];
                rec.sent_at = now;
                rec.sends = rec.sends.saturating_add(1);
                rec.snap = snap;
            }
        }
        let new_start = match log_end {
            Some(log_end) if log_end > seq => log_end,
            Some(log_end) if log_end != seq => {
                // Not contiguous with the log (it cannot happen while SND.NXT is never
                // rewound); start over rather than keep a log with a gap.
                self.clear();
                seq
            }
            _ => seq,
        };
        if end > new_start {
            self.log.push_back(Record {
                start: new_start,
                end,
                fin,
                sent_at: now,
                sends: 1,
                mark: Mark::InFlight,
                snap,
            });
        }
    }

    fn clear(&mut self) {
        self.log.clear();
        self.sacked = 0;
        self.lost = 0;
        self.rack_at = None;
        self.tlp_at = None;
        self.rto_at = None;
    }

    /// RACK (RFC 8985 6.2): remember the most recently sent delivered record. A
    /// resent record whose ACK came back faster than the minimum RTT was delivered
    /// by its first transmission: the resend was spurious, so the path reorders
    /// (or delays) segments, and the record says nothing about the RTT.
    fn rack_update(&mut self, now: Instant, rec: &Record, min_rtt_us: Option<u32>) {
        let rtt_us = (now - rec.sent_at).total_micros() as u32;
        if rec.sends > 1 && min_rtt_us.is_some_and(|min| rtt_us < min) {
            self.reordering_seen = true;
            return;
        }
        // An original delivered below the highest SACK: the network reordered it.
        if rec.sends == 1 && self.fack.is_some_and(|fack| rec.end < fack) {
            self.reordering_seen = true;
        }
        let newer = match self.rack_sent {
            None => true,
            Some((t, end)) => rec.sent_at > t || (rec.sent_at == t && rec.end > end),
        };
        if newer {
            self.rack_sent = Some((rec.sent_at, rec.end));
            self.rack_rtt_us = rtt_us;
        }
    }

    /// RACK loss detection: a record sent before the most recently delivered one
    /// is lost once RACK.rtt + reo_wnd has passed since it was sent. Returns the
    /// bytes newly marked lost and arms the reorder timer for the rest.
    fn rack_detect(&mut self, now: Instant, reo_wnd: Duration) -> usize {
        self.rack_at = None;
        let Some((rack_time, rack_end)) = self.rack_sent else {
            return 0;
        };
        let wait = Duration::from_micros(self.rack_rtt_us as u64) + reo_wnd;
        let mut newly_lost = 0;
        for i in 0..self.log.len() {
            let rec = self.log[i];
            // Originals after the RACK record were sent after it: nothing beyond
            // can be older, except resends, which are newer still.
            if rec.sends == 1 && rec.start >= rack_end {
                break;
            }
            if rec.mark != Mark::InFlight {
                continue;
            }
            let sent_before =
                rec.sent_at < rack_time || (rec.sent_at == rack_time && rec.end <= rack_end);
            if !sent_before {
                continue;
            }
            let deadline = rec.sent_at + wait;
            if now >= deadline {
                self.set_mark(i, Mark::Lost);
                newly_lost += rec.len();
            } else {
                self.rack_at = Some(self.rack_at.map_or(deadline, |t| t.min(deadline)));
            }
        }
        newly_lost
    }
}

impl Recovery {
    /// Count `bytes` newly delivered by an ACK at `now` whose most recently sent
    /// newly delivered record was `sampled`, and return the rate sample: bytes
    /// delivered since that record was sent, over the longer of its send
    /// interval and its ACK interval (the longer one is the rate the path could
    /// sustain: ACK compression shortens the ACK interval, and a burst the send
    /// interval). Intervals shorter than the min RTT are not valid samples.
    fn take_rate_sample(
        &mut self,
        now: Instant,
        bytes: usize,
        sampled: Option<Record>,
        min_rtt_us: Option<u32>,
    ) -> (Option<u64>, Option<(u64, u64)>, bool) {
        self.delivered += bytes as u64;
        if bytes > 0 {
            self.delivered_time = now;
        }
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        let Some(rec) = sampled else {
            return (None, None, false);
        };
        let snap = rec.snap;
        let send_us = (rec.sent_at - snap.first_sent_time).total_micros();
        let ack_us = (now - snap.delivered_time).total_micros();
        let interval_us = send_us.max(ack_us);
        // The next sample's send interval starts at this record's send time.
        self.first_sent_time = self.first_sent_time.max(rec.sent_at);
        let delivered = self.delivered - snap.delivered;
        let valid = interval_us > 0 && min_rtt_us.is_none_or(|min| interval_us >= min as u64);
        (
            Some(snap.delivered),
            valid.then_some((delivered, interval_us)),
            snap.app_limited,
        )
    }
}

#[cfg(test)]
impl Recovery {
    pub(super) fn app_limited(&self) -> bool {
        self.app_limited_until != 0
    }

    pub(super) fn last_sample(&self) -> Option<RateSample> {
        self.last_sample
    }

    pub(super) fn log_front(&self) -> Option<TcpSeqNumber> {
        self.log.front().map(|r| r.start)
    }

    pub(super) fn log_back(&self) -> Option<TcpSeqNumber> {
        self.log.back().map(|r| r.end)
    }

    /// The records are contiguous and the byte counters match their marks.
    pub(super) fn check_counters(&self) {
        let (mut sacked, mut lost) = (0, 0);
        for (i, r) in self.log.iter().enumerate() {
            assert!(r.start < r.end, "empty record {r:?}");
            if i > 0 {
                assert_eq!(self.log[i - 1].end, r.start, "gap before {r:?}");
            }
            match r.mark {
                Mark::Sacked => sacked += r.len(),
                Mark::Lost => lost += r.len(),
                Mark::InFlight => {}
            }
        }
        assert_eq!((sacked, lost), (self.sacked, self.lost));
    }
}

impl fmt::Debug for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovery")
            .field("records", &self.log.len())
            .field("flight", &self.flight())
            .field("sacked", &self.sacked)
            .field("lost", &self.lost)
            .field("recovery_point", &self.recovery_point)
            .field("rto_at", &self.rto_at)
            .field("rack_at", &self.rack_at)
            .field("tlp_at", &self.tlp_at)
            .finish_non_exhaustive()
    }
}

/// What the WAN-mode sender will put in its next data segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WanSend {
    /// Resend `len` sequence numbers from `seq` (FIN included if `fin`).
    Resend {
        seq: TcpSeqNumber,
        len: usize,
        fin: bool,
    },
    /// Send new data; `probe` lifts the congestion window for one segment.
    New { probe: bool },
}

impl<'a> Socket<'a> {
    fn wan(&self) -> &Recovery {
        // Callers check `wan_active()` first.
        self.wan.as_deref().expect("WAN mode state")
    }

    fn wan_mut(&mut self) -> &mut Recovery {
        self.wan.as_deref_mut().expect("WAN mode state")
    }

    /// Tell the congestion controller the effective MSS (local and remote limits,
    /// less TCP options) rather than the peer's MSS option.
    pub(super) fn wan_set_mss(&mut self, effective_mss: usize) {
        if self.wan().cc_mss != effective_mss {
            self.wan_mut().cc_mss = effective_mss;
            self.congestion_controller
                .inner_mut()
                .set_mss(effective_mss);
        }
    }

    /// The congestion window room in WAN mode: cwnd − pipe, unbounded for a probe,
    /// none while the pacer holds data back.
    pub(super) fn wan_cwnd_remaining(&self, now: Instant) -> usize {
        let wan = self.wan();
        if !self.wan_pace_allows(now) {
            return 0;
        }
        if wan.probe_due {
            return usize::MAX;
        }
        self.congestion_controller
            .inner()
            .window()
            .saturating_sub(wan.pipe())
    }

    /// The next resend, if one is due and allowed: the lowest lost range while the
    /// pipe is below cwnd, or the highest unSACKed range as a tail loss probe when
    /// there is no new data to probe with. Resends stay inside the receive window,
    /// except the first outstanding range, which the receiver must take.
    pub(super) fn wan_resend(&self, now: Instant) -> Option<WanSend> {
        let wan = self.wan();
        if !self.wan_pace_allows(now) {
            return None;
        }
        let win_end = self.local_seq_no + self.remote_win_len;
        let resend = |r: &Record| WanSend::Resend {
            seq: r.start,
            len: r.len(),
            fin: r.fin,
        };
        if let Some(rec) = wan.first_lost() {
            let is_head = wan.log.front().is_some_and(|f| f.start == rec.start);
            let room = self.congestion_controller.inner().window() > wan.pipe();
            if (room || wan.probe_due) && (is_head || rec.start < win_end) {
                return Some(resend(rec));
            }
            return None;
        }
        if wan.probe_due && !self.wan_has_new_data() {
            return wan
                .log
                .iter()
                .rev()
                .find(|r| r.mark != Mark::Sacked)
                .map(resend);
        }
        None
    }

    /// Unsent data inside the receive window.
    fn wan_has_new_data(&self) -> bool {
        let unsent_end = self.local_seq_no + self.tx_buffer.len();
        let win_end = self.local_seq_no + self.remote_win_len;
        self.remote_last_seq < unsent_end && self.remote_last_seq < win_end
    }

    /// Whether WAN mode has a segment to send now (a resend or a probe).
    pub(super) fn wan_wants_to_send(&self, now: Instant) -> bool {
        self.wan_resend(now).is_some()
            || (self.wan().probe_due && self.wan_has_new_data() && self.wan_pace_allows(now))
    }

    /// The earliest WAN-mode deadline: RTO, RACK, TLP, and the pacer's next
    /// release while it holds back something cwnd would let out.
    pub(super) fn wan_poll_at(&self, now: Instant) -> PollAt {
        let wan = self.wan();
        let room = self.congestion_controller.inner().window() > wan.pipe();
        let waiting = wan.probe_due || (room && (wan.lost > 0 || self.wan_has_new_data()));
        let release = if waiting {
            self.wan_pace_release(now)
        } else {
            None
        };
        [wan.rto_at, wan.rack_at, wan.tlp_at, release]
            .into_iter()
            .flatten()
            .min()
            .map_or(PollAt::Ingress, PollAt::Time)
    }

    /// Pacing rate in bytes/s: cwnd/SRTT, times 2 in slow start and 1.2 after
    /// (Linux's `tcp_pacing_ss_ratio` and `tcp_pacing_ca_ratio`). None until
    /// there is an RTT sample: the initial window goes out at once.
    fn wan_pacing_rate(&self) -> Option<u64> {
        let cc = self.congestion_controller.inner();
        if let Some(rate) = cc.pacing_rate() {
            return Some(rate.max(1));
        }
        let srtt_us = self.rtte.srtt_us()?.max(1) as u128;
        let percent = if cc.in_slow_start() { 200 } else { 120 };
        let rate = cc.window() as u128 * 1_000_000 * percent / 100 / srtt_us;
        Some(rate.clamp(1, u64::MAX as u128) as u64)
    }

    /// Bucket depth: about 1 ms of data (as Linux's `sk_pacing_shift`), between
    /// 2 segments and 64 KiB, and 64 KiB on a LAN (min RTT under 2 ms), where a
    /// 1 ms timer could otherwise not keep the link busy. Plus 1 ms of credit, so
    /// that a timer that fires up to 1 ms late does not cost rate; the credit is
    /// only for a sender that sent within the last 2 ms (one waiting on the pacer
    /// is woken that soon): one held back longer by cwnd or the receive window
    /// owes nothing to a late timer, and would release 2 ms of data at once.
    fn wan_pacing_cap(&self, rate: u64, elapsed_us: u128) -> i64 {
        const MAX_BURST: u64 = 64 * 1024;
        let mss = self.wan().cc_mss.max(self.remote_mss) as u64;
        let per_ms = rate / 1000;
        let mut depth = per_ms.min(MAX_BURST).max(2 * mss);
        if self.rtte.min_rtt_us().is_some_and(|us| us < 2000) {
            depth = depth.max(MAX_BURST);
        }
        let credit = if elapsed_us <= 2000 { per_ms } else { 0 };
        (depth + credit).min(i64::MAX as u64 / 2) as i64
    }

    /// Tokens at `now`, or None when nothing is paced.
    fn wan_pace_tokens(&self, now: Instant) -> Option<i64> {
        let rate = self.wan_pacing_rate()?;
        let wan = self.wan();
        let Some(last) = wan.pace_last else {
            return Some(self.wan_pacing_cap(rate, u128::MAX));
        };
        let elapsed_us = if now > last {
            (now - last).total_micros() as u128
        } else {
            0
        };
        let cap = self.wan_pacing_cap(rate, elapsed_us);
        let earned = (rate as u128 * elapsed_us / 1_000_000).min(i64::MAX as u128 / 2) as i64;
        Some(wan.pace_tokens.saturating_add(earned).min(cap))
    }

    fn wan_pace_allows(&self, now: Instant) -> bool {
        self.wan_pace_tokens(now).is_none_or(|tokens| tokens > 0)
    }

    /// When the bucket next holds a token, if it is empty now.
    fn wan_pace_release(&self, now: Instant) -> Option<Instant> {
        let rate = self.wan_pacing_rate()?;
        let tokens = self.wan_pace_tokens(now)?;
        if tokens > 0 {
            return None;
        }
        let missing = (1 - tokens) as u128;
        let wait_us = (missing * 1_000_000).div_ceil(rate as u128);
        Some(now + Duration::from_micros(wait_us.min(u64::MAX as u128) as u64))
    }

    fn wan_rto(&self) -> Duration {
        self.rtte.retransmission_timeout()
    }

    /// RFC 8985 7.2 PTO: 2·SRTT, plus the worst-case delayed ACK with one
    /// segment out; 1 s before the first sample. A PTO past the RTO is cut to it:
    /// the probe then goes out instead of the timeout, which would collapse cwnd.
    fn wan_arm_tlp(&mut self, now: Instant) {
        let srtt = self
            .rtte
            .srtt_us()
            .map(|us| Duration::from_micros(us as u64));
        let rto_at = self.wan().rto_at;
        let wan = self.wan_mut();
        if wan.recovery_point.is_some() || wan.probe_out || wan.lost > 0 || wan.log.is_empty() {
            wan.tlp_at = None;
            return;
        }
        let mut pto = srtt.map_or(Duration::from_secs(1), |srtt| srtt * 2);
        if wan.log.len() == 1 {
            pto += TLP_DELAYED_ACK;
        }
        let at = now + pto;
        wan.tlp_at = Some(rto_at.map_or(at, |rto_at| rto_at.min(at)));
    }

    /// RFC 8985 6.2 step 4: no reordering window until reordering was seen, while
    /// in recovery or once 3 segments are SACKed; else a quarter of the minimum RTT,
    /// never more than SRTT.
    fn wan_reo_wnd(&self) -> Duration {
        let wan = self.wan();
        let mss = self.remote_mss.max(1);
        if !wan.reordering_seen && (wan.recovery_point.is_some() || wan.sacked >= 3 * mss) {
            return Duration::ZERO;
        }
        let quarter = self.rtte.min_rtt_us().unwrap_or(0) / 4;
        let srtt = self.rtte.srtt_us().unwrap_or(u32::MAX);
        Duration::from_micros(quarter.min(srtt) as u64)
    }

    /// The flight the controller bases ssthresh on: SND.NXT − SND.UNA, but no more
    /// than cwnd. During a long recovery SND.NXT − SND.UNA also counts megabytes of
    /// SACKed data behind one hole; 0.7 of that would raise the window on a loss
    /// (Linux's CUBIC takes β·cwnd for the same reason).
    fn wan_loss_flight(&self) -> usize {
        let cwnd = self.congestion_controller.inner().window();
        self.wan().flight().min(cwnd)
    }

    /// Run RACK and enter recovery on new losses.
    fn wan_detect_loss(&mut self, now: Instant) -> usize {
        let reo_wnd = self.wan_reo_wnd();
        let newly_lost = self.wan_mut().rack_detect(now, reo_wnd);
        if newly_lost > 0 && self.wan().recovery_point.is_none() {
            let flight = self.wan_loss_flight();
            let nxt = self.remote_last_seq;
            self.wan_mut().recovery_point = Some(nxt);
            self.stats.fast_recoveries = self.stats.fast_recoveries.saturating_add(1);
            self.congestion_controller.inner_mut().on_loss(now, flight);
        }
        if newly_lost > 0 {
            self.wan_mut().tlp_at = None;
        }
        newly_lost
    }

    /// Process the ACK number and SACK blocks of an acceptable segment. Called
    /// before `local_seq_no` moves to `ack`.
    pub(super) fn wan_on_ack(&mut self, now: Instant, repr: &TcpRepr, ack: TcpSeqNumber) {
        let min_rtt = self.rtte.min_rtt_us();
        let nxt = self.remote_last_seq;
        // SACK blocks that split records could grow the log to one record per
        // byte; past twice the records that full segments need, they are ignored.
        let max_records = 2 * (self.tx_buffer.capacity() / self.remote_mss.max(1)) + 64;
        let mut delivered = 0;
        // Karn: the RTT sample comes from the most recently sent record that was
        // sent once and is newly delivered.
        let mut sample: Option<Instant> = None;
        // Delivery rate: the most recently sent newly delivered record.
        let mut sampled: Option<Record> = None;
        let mut una_advanced = false;
        let wan = self.wan_mut();
        let prior_inflight = wan.pipe();
        let newer = |cand: &Option<Record>, rec: &Record| {
            cand.is_none_or(|c| {
                rec.sent_at > c.sent_at || (rec.sent_at == c.sent_at && rec.end > c.end)
            })
        };

        // Cumulative ACK: drop what it covers.
        while let Some(front) = wan.log.front().copied() {
            if front.start >= ack {
                break;
            }
            una_advanced = true;
            if front.end > ack {
                // A partial ACK of one record (e.g. after a window shrink).
                let i = wan.split_at(ack);
                debug_assert_eq!(i, 1);
            }
            let Some(rec) = wan.log.pop_front() else {
                break;
            };
            match rec.mark {
                Mark::Sacked => wan.sacked -= rec.len(),
                Mark::Lost => {
                    wan.lost -= rec.len();
                    delivered += rec.len();
                }
                Mark::InFlight => delivered += rec.len(),
            }
            if rec.mark != Mark::Sacked {
                if rec.sends == 1 && sample.is_none_or(|t| rec.sent_at > t) {
                    sample = Some(rec.sent_at);
                }
                if newer(&sampled, &rec) {
                    sampled = Some(rec);
                }
                wan.rack_update(now, &rec, min_rtt);
            }
        }

        // SACK blocks (RFC 2018): ignore those at or below the ACK and those
        // reaching past SND.NXT; clip the rest to the log. A block below the ACK is
        // a D-SACK (RFC 2883): a segment arrived twice, so a resend was spurious,
        // which is the evidence of reordering that opens RACK's reordering window.
        for (left, right) in repr.sack_ranges.iter().flatten() {
            let left = TcpSeqNumber(*left as i32);
            let right = TcpSeqNumber(*right as i32);
            if left < right && right <= ack {
                wan.reordering_seen = true;
            }
            if right <= left || right <= ack || right > nxt {
                continue;
            }
            if wan.log.len() >= max_records {
                break;
            }
            let left = left.max(ack);
            let first = wan.split_at(left);
            let stop = wan.split_at(right);
            for i in first..stop {
                let rec = wan.log[i];
                if rec.mark == Mark::Sacked {
                    continue;
                }
                delivered += rec.len();
                wan.set_mark(i, Mark::Sacked);
                if rec.sends == 1 && sample.is_none_or(|t| rec.sent_at > t) {
                    sample = Some(rec.sent_at);
                }
                if newer(&sampled, &rec) {
                    sampled = Some(rec);
                }
                wan.rack_update(now, &rec, min_rtt);
            }
            if wan.fack.is_none_or(|fack| right > fack) {
                wan.fack = Some(right);
            }
        }
        if wan.fack.is_some_and(|fack| fack <= ack) {
            wan.fack = None;
        }

        if delivered > 0 {
            wan.probe_out = false;
        }
        let (prior_delivered, rate, app_limited) =
            wan.take_rate_sample(now, delivered, sampled, min_rtt);
        // The RTT of the sampled record, if it was sent once.
        let sample_rtt_us = sampled
            .filter(|rec| rec.sends == 1)
            .map(|rec| (now - rec.sent_at).total_micros().min(u32::MAX as u64) as u32);
        if una_advanced {
            wan.consecutive_rtos = 0;
            if wan.recovery_point.is_some_and(|point| ack >= point) {
                wan.recovery_point = None;
                wan.rto_recovery = false;
            }
        }
        let empty = wan.log.is_empty();

        if let Some(sent_at) = sample {
            let rtt_us = (now - sent_at).total_micros().min(u32::MAX as u64) as u32;
            self.rtte.sample_us(now, rtt_us);
        }

        // RFC 6298 (5.2), (5.3): stop the timer when all is ACKed, restart it when
        // the ACK moves.
        if empty {
            self.wan_mut().clear();
        } else if una_advanced {
            let rto = self.wan_rto();
            self.wan_mut().rto_at = Some(now + rto);
        }

        let lost = if empty { 0 } else { self.wan_detect_loss(now) };
        // cwnd holds during fast recovery (as Linux: no growth in Recovery), but
        // slow-starts again after an RTO.
        let wan = self.wan();
        let (pipe, grow) = (wan.pipe(), wan.recovery_point.is_none() || wan.rto_recovery);
        if grow {
            self.congestion_controller
                .inner_mut()
                .on_ack(now, delivered, pipe, &self.rtte);
        }
        self.wan_rate_sample(
            now,
            RateSample {
                acked: delivered,
                lost,
                prior_delivered,
                rate,
                app_limited,
                rtt_us: sample_rtt_us,
                prior_inflight,
                ..RateSample::default()
            },
        );
        // Application-limited check, with the buffer as the ACK leaves it (the
        // ACKed bytes are already dequeued, `local_seq_no` not yet moved).
        self.wan_check_app_limited(ack + self.tx_buffer.len());
        if delivered > 0 {
            self.wan_arm_tlp(now);
        }
    }

    /// Complete `rs` with the sender's state and give it to the controller.
    fn wan_rate_sample(&mut self, now: Instant, mut rs: RateSample) {
        let wan = self.wan();
        rs.delivered_total = wan.delivered;
        rs.inflight = wan.pipe();
        rs.in_recovery = wan.recovery_point.is_some();
        #[cfg(test)]
        {
            self.wan_mut().last_sample = Some(rs);
        }
        self.congestion_controller
            .inner_mut()
            .on_rate_sample(now, &rs);
    }

    /// Mark the sender application-limited when it has nothing more to send
    /// (every byte up to `buffer_end` sent), nothing to resend, and room in cwnd:
    /// rate samples of the data now in flight then measure the application, not
    /// the path. A send buffer full of unacknowledged data reads the same way,
    /// and must: the bandwidth estimate may not learn the buffer's limit as the
    /// path's (a larger buffer lifts it).
    fn wan_check_app_limited(&mut self, buffer_end: TcpSeqNumber) {
        let cwnd = self.congestion_controller.inner().window();
        let all_sent = self.remote_last_seq >= buffer_end;
        let wan = self.wan_mut();
        if all_sent && wan.lost == 0 && wan.pipe() < cwnd {
            wan.app_limited_until = (wan.delivered + wan.pipe() as u64).max(1);
        }
    }

    /// Fire the deadlines that have passed. Called at the start of `dispatch`.
    pub(super) fn wan_on_timers(&mut self, now: Instant) {
        let wan = self.wan();
        let (rto_due, rack_due, tlp_due) = (
            wan.rto_at.is_some_and(|t| now >= t),
            wan.rack_at.is_some_and(|t| now >= t),
            wan.tlp_at.is_some_and(|t| now >= t),
        );
        if tlp_due {
            // The probe goes first, and the RTO restarts behind it.
            let rto = self.wan_rto();
            let wan = self.wan_mut();
            wan.tlp_at = None;
            if wan.lost == 0 && !wan.log.is_empty() {
                wan.probe_due = true;
                wan.rto_at = Some(now + rto);
                return;
            }
        }
        if rto_due {
            self.wan_on_rto(now);
            return;
        }
        if rack_due {
            let lost = self.wan_detect_loss(now);
            if lost > 0 {
                let prior_inflight = self.wan().pipe() + lost;
                self.wan_rate_sample(
                    now,
                    RateSample {
                        lost,
                        prior_inflight,
                        ..RateSample::default()
                    },
                );
            }
        }
    }

    /// RTO (RFC 8985 6.3): the first outstanding range is lost, and so is every
    /// range not SACKed that was sent at least RACK.rtt + reo_wnd ago; ranges sent
    /// more recently may still arrive, and resending them would be spurious. The
    /// second timeout in a row also forgets the SACK scoreboard, in case the
    /// receiver reneged on it (RFC 2018 section 8).
    fn wan_on_rto(&mut self, now: Instant) {
        self.stats.rtos = self.stats.rtos.saturating_add(1);
        let flight = self.wan_loss_flight();
        self.congestion_controller.inner_mut().on_rto(now, flight);
        self.rtte.on_rto();
        let rto = self.wan_rto();
        let reo_wnd = self.wan_reo_wnd();
        let srtt_us = self.rtte.srtt_us().unwrap_or(0);
        let nxt = self.remote_last_seq;
        let wan = self.wan_mut();
        let rack_rtt_us = if wan.rack_sent.is_some() {
            wan.rack_rtt_us
        } else {
            srtt_us
        };
        let wait = Duration::from_micros(rack_rtt_us as u64) + reo_wnd;
        wan.consecutive_rtos = wan.consecutive_rtos.saturating_add(1);
        let forget_sacks = wan.consecutive_rtos >= 2;
        for i in 0..wan.log.len() {
            let rec = wan.log[i];
            if rec.mark == Mark::Sacked && !forget_sacks {
                continue;
            }
            if i == 0 || rec.sent_at + wait <= now {
                wan.set_mark(i, Mark::Lost);
            } else if rec.mark == Mark::Sacked {
                wan.set_mark(i, Mark::InFlight);
            }
        }
        if forget_sacks {
            wan.fack = None;
        }
        wan.recovery_point = Some(nxt);
        wan.rto_recovery = true;
        wan.tlp_at = None;
        wan.probe_due = false;
        // RFC 6298 (5.5), (5.6): the timer restarts with the backed-off RTO, also
        // when nothing could be marked lost (all of it SACKed).
        wan.rto_at = (!wan.log.is_empty()).then(|| now + rto);
    }

    /// Log a segment that was just emitted; `is_resend` if it started below SND.NXT.
    pub(super) fn wan_on_transmit(
        &mut self,
        now: Instant,
        seq: TcpSeqNumber,
        len: usize,
        fin: bool,
        is_resend: bool,
    ) {
        if len == 0 {
            return;
        }
        if is_resend {
            self.stats.retransmitted_segments = self.stats.retransmitted_segments.saturating_add(1);
        }
        let rto = self.wan_rto();
        let tokens = self.wan_pace_tokens(now);
        let wan = self.wan_mut();
        if let Some(tokens) = tokens {
            wan.pace_tokens = tokens - len as i64;
            wan.pace_last = Some(now);
        }
        wan.on_transmit(now, seq, len, fin);
        if wan.probe_due {
            wan.probe_due = false;
            wan.probe_out = true;
            self.stats.tail_loss_probes = self.stats.tail_loss_probes.saturating_add(1);
        }
        let wan = self.wan_mut();
        if wan.rto_at.is_none() {
            wan.rto_at = Some(now + rto);
        }
        if !is_resend {
            self.wan_arm_tlp(now);
        }
        let buffer_end = self.local_seq_no + self.tx_buffer.len();
        self.wan_check_app_limited(buffer_end);
    }
}

impl State {
    /// States in which the WAN-mode sender owns retransmission: the handshake is
    /// done and data or a FIN may be outstanding.
    pub(super) fn wan_sends_data(self) -> bool {
        matches!(
            self,
            State::Established
                | State::FinWait1
                | State::Closing
                | State::CloseWait
                | State::LastAck
        )
    }
}
