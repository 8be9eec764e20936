//! promgate patch: BBR v1 congestion control, for WAN mode.
//!
//! BBR models the path by two numbers: the bottleneck bandwidth (the highest
//! delivery rate measured over the last 10 rounds, not counting samples taken
//! while the sender was application-limited) and the minimum RTT (over the last
//! 10 s). It paces at a gain times that bandwidth and bounds the data in flight
//! by a gain times their product (the BDP). Loss is not a congestion signal: on
//! a path with random loss it keeps sending at the bottleneck rate, where a
//! loss-based controller stays near the Mathis bound.
//!
//! The states, as in the published BBR v1 design (and Linux's mainline `bbr`):
//!
//! * STARTUP: pacing and cwnd gain 2/ln 2, doubling the delivery rate each round,
//!   until three rounds in a row raise the bandwidth estimate by less than 25 %;
//! * DRAIN: pacing gain ln 2/2, until the pipe is down to one BDP;
//! * PROBE_BW: cwnd gain 2 and an eight-phase pacing cycle, each phase at least
//!   one min RTT long: 1.25 (probe for more bandwidth), 0.75 (drain what that
//!   queued), then six phases at 1;
//! * PROBE_RTT: when the min RTT has not been renewed for 10 s, cwnd drops to 4
//!   segments for max(200 ms, one round) so that queues drain and the min RTT
//!   can be measured again.
//!
//! cwnd is gain·BDP plus three send quanta plus an allowance for ACK
//! aggregation (the most data ACKed beyond what the bandwidth estimate
//! explains, over the last 5 to 10 rounds, at most 100 ms of data). On entering
//! fast recovery cwnd follows packet conservation for one round (it may only
//! replace what was delivered), then grows again; on leaving recovery it gets
//! back the value it had before. An RTO sets it to one segment, restored the
//! same way.
//!
//! On a LAN (min RTT under 2 ms) a 1 ms timer wheel makes the measured BDP
//! meaningless, so cwnd (and the pacer's quantum, in `wan.rs`) never falls
//! below 64 KiB there.
//!
//! Not built: the long-term bandwidth estimate for token-bucket policers, and
//! the pacing-rate reset when a connection restarts from idle.

use crate::time::{Duration, Instant};

use super::{Controller, RateSample};
use crate::socket::tcp::RttEstimator;

/// Gains in 1/256 units.
const UNIT: u64 = 256;
/// 2/ln 2, rounded up: the smallest gain that doubles the delivery rate per round.
const HIGH_GAIN: u64 = UNIT * 2885 / 1000 + 1;
/// Its inverse, to drain the queue STARTUP built in one round.
const DRAIN_GAIN: u64 = UNIT * 1000 / 2885;
const CWND_GAIN: u64 = 2 * UNIT;
/// The PROBE_BW pacing cycle.
const CYCLE: [u64; 8] = [
    UNIT * 5 / 4,
    UNIT * 3 / 4,
    UNIT,
    UNIT,
    UNIT,
    UNIT,
    UNIT,
    UNIT,
];
/// Pace 1 % below the estimate, so a queue at the bottleneck can drain.
const PACING_MARGIN_PERCENT: u64 = 1;
/// Rounds over which the bottleneck bandwidth is a windowed maximum.
const BW_ROUNDS: usize = 10;
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// Segments in flight during PROBE_RTT, and the least cwnd.
const MIN_SEGMENTS: usize = 4;
/// Rounds without 25 % growth after which the pipe is full.
const FULL_BW_ROUNDS: u32 = 3;
/// Rounds per half of the ACK-aggregation window (two halves).
const EXTRA_ACKED_ROUNDS: u32 = 5;
/// The ACK-aggregation allowance is at most this much data at the bottleneck rate.
const EXTRA_ACKED_MAX: Duration = Duration::from_millis(100);
/// Below this min RTT the path is a LAN: cwnd and the quantum keep a floor.
const LAN_RTT_US: u32 = 2000;
const LAN_FLOOR: usize = 64 * 1024;
/// Bounds of the send quantum (about 1 ms of data).
const MAX_QUANTUM: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bbr {
    mode: Mode,
    mss: usize,
    cwnd: usize,
    /// cwnd before the last recovery or PROBE_RTT, to restore afterwards.
    prior_cwnd: usize,
    /// The remote window, used as the window without WAN mode.
    rwnd: usize,
    wan: bool,

    /// Round counting: a round ends when a record sent after its start is delivered.
    round_count: u64,
    next_round_delivered: u64,
    round_start: bool,

    /// Per-round maximum delivery rate (bytes/s) and the round it belongs to.
    bw_slots: [(u64, u64); BW_ROUNDS],
    /// Windowed min RTT (µs) and when it was taken.
    min_rtt_us: Option<u32>,
    min_rtt_stamp: Option<Instant>,

    pacing_gain: u64,
    cwnd_gain: u64,
    pacing_rate: u64,

    full_bw: u64,
    full_bw_rounds: u32,
    full_bw_reached: bool,

    cycle_index: usize,
    cycle_stamp: Option<Instant>,

    probe_rtt_done: Option<Instant>,
    probe_rtt_round_done: bool,

    in_recovery: bool,
    packet_conservation: bool,

    /// ACK aggregation: the current epoch's start and bytes ACKed in it, and the
    /// two halves of the windowed maximum of the excess.
    epoch_start: Option<Instant>,
    epoch_acked: u64,
    extra_acked: [u64; 2],
    extra_acked_index: usize,
    extra_acked_rounds: u32,
}

impl Bbr {
    pub fn new() -> Self {
        let mss = 1024;
        Bbr {
            mode: Mode::Startup,
            mss,
            cwnd: super::initial_window(mss),
            prior_cwnd: 0,
            rwnd: 64 * 1024,
            wan: false,
            round_count: 0,
            next_round_delivered: 0,
            round_start: false,
            bw_slots: [(0, 0); BW_ROUNDS],
            min_rtt_us: None,
            min_rtt_stamp: None,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            pacing_rate: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            full_bw_reached: false,
            cycle_index: 0,
            cycle_stamp: None,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            in_recovery: false,
            packet_conservation: false,
            epoch_start: None,
            epoch_acked: 0,
            extra_acked: [0; 2],
            extra_acked_index: 0,
            extra_acked_rounds: 0,
        }
    }

    /// The bottleneck bandwidth estimate, bytes/s.
    fn max_bw(&self) -> u64 {
        self.bw_slots
            .iter()
            .filter(|(_, round)| self.round_count < round + BW_ROUNDS as u64)
            .map(|(bw, _)| *bw)
            .max()
            .unwrap_or(0)
    }

    fn on_lan(&self) -> bool {
        self.min_rtt_us.is_some_and(|us| us < LAN_RTT_US)
    }

    /// gain × bandwidth × min RTT, in bytes; the initial window before there is
    /// an estimate.
    fn bdp(&self, gain: u64) -> usize {
        let (Some(min_rtt), bw) = (self.min_rtt_us, self.max_bw()) else {
            return super::initial_window(self.mss);
        };
        if bw == 0 {
            return super::initial_window(self.mss);
        }
        let bytes = bw as u128 * min_rtt as u128 * gain as u128 / UNIT as u128 / 1_000_000;
        bytes.min(usize::MAX as u128 / 4) as usize
    }

    /// About 1 ms of data at the pacing rate, between 2 segments and 64 KiB; 64
    /// KiB on a LAN.
    fn quantum(&self) -> usize {
        if self.on_lan() {
            return MAX_QUANTUM;
        }
        let per_ms = (self.pacing_rate / 1000).min(MAX_QUANTUM as u64) as usize;
        per_ms.max(2 * self.mss)
    }

    /// The least cwnd: 4 segments, 64 KiB on a LAN.
    fn min_cwnd(&self) -> usize {
        let floor = MIN_SEGMENTS * self.mss;
        if self.on_lan() {
            floor.max(LAN_FLOOR)
        } else {
            floor
        }
    }

    fn save_cwnd(&mut self) {
        if !self.in_recovery && self.mode != Mode::ProbeRtt {
            self.prior_cwnd = self.cwnd;
        } else {
            self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
        }
    }

    /// A cheap, deterministic choice of the first PROBE_BW phase, so that flows
    /// started together do not probe in step.
    fn pseudo_random(&self, now: Instant) -> u64 {
        let x = (now.total_micros() as u64) ^ self.round_count.rotate_left(17);
        x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.mode = Mode::ProbeBw;
        self.cwnd_gain = CWND_GAIN;
        // Any phase but the draining one (index 1).
        let r = (self.pseudo_random(now) % 7) as usize;
        self.cycle_index = (CYCLE.len() - r) % CYCLE.len();
        self.pacing_gain = CYCLE[self.cycle_index];
        self.cycle_stamp = Some(now);
    }

    fn enter_startup(&mut self) {
        self.mode = Mode::Startup;
        self.pacing_gain = HIGH_GAIN;
        self.cwnd_gain = HIGH_GAIN;
    }

    fn update_round(&mut self, rs: &RateSample) {
        self.round_start = false;
        if let Some(prior) = rs.prior_delivered
            && prior >= self.next_round_delivered
        {
            self.next_round_delivered = rs.delivered_total;
            self.round_count += 1;
            self.round_start = true;
            self.packet_conservation = false;
        }
    }

    fn update_bw(&mut self, rs: &RateSample) {
        let Some((delivered, interval_us)) = rs.rate else {
            return;
        };
        if interval_us == 0 {
            return;
        }
        let bw = (delivered as u128 * 1_000_000 / interval_us as u128).min(u64::MAX as u128) as u64;
        // An application-limited sample only counts if it beats the estimate.
        if rs.app_limited && bw < self.max_bw() {
            return;
        }
        let slot = &mut self.bw_slots[(self.round_count % BW_ROUNDS as u64) as usize];
        if slot.1 != self.round_count {
            *slot = (0, self.round_count);
        }
        slot.0 = slot.0.max(bw);
    }

    fn update_ack_aggregation(&mut self, now: Instant, rs: &RateSample) {
        let bw = self.max_bw();
        if rs.acked == 0 || bw == 0 {
            return;
        }
        if self.round_start {
            self.extra_acked_rounds += 1;
            if self.extra_acked_rounds >= EXTRA_ACKED_ROUNDS {
                self.extra_acked_rounds = 0;
                self.extra_acked_index ^= 1;
                self.extra_acked[self.extra_acked_index] = 0;
            }
        }
        let elapsed_us = self
            .epoch_start
            .map_or(0, |start| (now - start).total_micros());
        let expected = (bw as u128 * elapsed_us as u128 / 1_000_000).min(u64::MAX as u128) as u64;
        // A new epoch when the ACKs fall behind the estimate (no aggregation now),
        // or after about 1 GB, so the sum cannot grow stale.
        if self.epoch_start.is_none() || self.epoch_acked <= expected || self.epoch_acked > 1 << 30
        {
            self.epoch_start = Some(now);
            self.epoch_acked = 0;
        }
        let expected = if self.epoch_acked == 0 { 0 } else { expected };
        self.epoch_acked += rs.acked as u64;
        let extra = self
            .epoch_acked
            .saturating_sub(expected)
            .min(self.cwnd as u64);
        let slot = &mut self.extra_acked[self.extra_acked_index];
        *slot = (*slot).max(extra);
    }

    fn aggregation_allowance(&self) -> usize {
        let max = self.extra_acked[0].max(self.extra_acked[1]);
        let cap = self.max_bw() as u128 * EXTRA_ACKED_MAX.total_micros() as u128 / 1_000_000;
        (max as u128).min(cap) as usize
    }

    fn update_cycle_phase(&mut self, now: Instant, rs: &RateSample) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let min_rtt = Duration::from_micros(self.min_rtt_us.unwrap_or(0) as u64);
        let full_length = self.cycle_stamp.is_none_or(|t| now - t > min_rtt);
        let advance = if self.pacing_gain == UNIT {
            full_length
        } else if self.pacing_gain > UNIT {
            // Probing: stay until the extra data is in flight (or loss says the
            // pipe is full).
            full_length && (rs.lost > 0 || rs.prior_inflight >= self.bdp(self.pacing_gain))
        } else {
            // Draining: leave as soon as the queue is gone.
            full_length || rs.prior_inflight <= self.bdp(UNIT)
        };
        if advance {
            self.cycle_index = (self.cycle_index + 1) % CYCLE.len();
            self.pacing_gain = CYCLE[self.cycle_index];
            self.cycle_stamp = Some(now);
        }
    }

    fn check_full_bw(&mut self, rs: &RateSample) {
        if self.full_bw_reached || !self.round_start || rs.app_limited {
            return;
        }
        let bw = self.max_bw();
        if bw >= self.full_bw.saturating_mul(5) / 4 {
            self.full_bw = bw;
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        self.full_bw_reached = self.full_bw_rounds >= FULL_BW_ROUNDS;
    }

    fn check_drain(&mut self, now: Instant, rs: &RateSample) {
        if self.mode == Mode::Startup && self.full_bw_reached {
            self.mode = Mode::Drain;
            self.pacing_gain = DRAIN_GAIN;
            self.cwnd_gain = HIGH_GAIN;
        }
        if self.mode == Mode::Drain && rs.inflight <= self.bdp(UNIT) {
            self.enter_probe_bw(now);
        }
    }

    fn update_min_rtt(&mut self, now: Instant, rs: &RateSample) {
        let expired = self
            .min_rtt_stamp
            .is_some_and(|stamp| now > stamp + MIN_RTT_WINDOW);
        if let Some(rtt) = rs.rtt_us
            && (expired || self.min_rtt_us.is_none_or(|min| rtt < min))
        {
            self.min_rtt_us = Some(rtt.max(1));
            self.min_rtt_stamp = Some(now);
        }
        if expired && self.mode != Mode::ProbeRtt {
            self.mode = Mode::ProbeRtt;
            self.pacing_gain = UNIT;
            self.cwnd_gain = UNIT;
            self.save_cwnd();
            self.probe_rtt_done = None;
        }
        if self.mode != Mode::ProbeRtt {
            return;
        }
        match self.probe_rtt_done {
            None if rs.inflight <= self.min_cwnd() => {
                self.probe_rtt_done = Some(now + PROBE_RTT_TIME);
                self.probe_rtt_round_done = false;
                self.next_round_delivered = rs.delivered_total;
            }
            None => {}
            Some(done) => {
                if self.round_start {
                    self.probe_rtt_round_done = true;
                }
                if self.probe_rtt_round_done && now >= done {
                    self.min_rtt_stamp = Some(now);
                    self.cwnd = self.cwnd.max(self.prior_cwnd);
                    if self.full_bw_reached {
                        self.enter_probe_bw(now);
                    } else {
                        self.enter_startup();
                    }
                }
            }
        }
    }

    fn update_pacing_rate(&mut self, rs: &RateSample) {
        let bw = self.max_bw();
        let rate = if bw == 0 {
            // Before the first rate sample: the initial window over the first RTT.
            let Some(rtt) = rs.rtt_us.or(self.min_rtt_us) else {
                return;
            };
            (self.cwnd as u128 * 1_000_000 / rtt.max(1) as u128 * HIGH_GAIN as u128 / UNIT as u128)
                .min(u64::MAX as u128) as u64
        } else {
            (bw as u128 * self.pacing_gain as u128 / UNIT as u128
                * (100 - PACING_MARGIN_PERCENT) as u128
                / 100)
                .min(u64::MAX as u128) as u64
        };
        // In STARTUP the rate only goes up, so one slow sample cannot stall it.
        if self.full_bw_reached || rate > self.pacing_rate {
            self.pacing_rate = rate.max(1);
        }
    }

    fn update_cwnd(&mut self, rs: &RateSample) {
        let acked = rs.acked;
        // Recovery: packet conservation for the first round, then growth; on
        // leaving it, back to the cwnd from before.
        if rs.lost > 0 {
            self.cwnd = self.cwnd.saturating_sub(rs.lost).max(self.mss);
        }
        if rs.in_recovery && !self.in_recovery {
            self.packet_conservation = true;
            self.next_round_delivered = rs.delivered_total;
            self.cwnd = rs.inflight + acked;
        } else if !rs.in_recovery && self.in_recovery {
            self.cwnd = self.cwnd.max(self.prior_cwnd);
            self.packet_conservation = false;
        }
        self.in_recovery = rs.in_recovery;

        if acked > 0 {
            if self.packet_conservation {
                self.cwnd = self.cwnd.max(rs.inflight + acked);
            } else {
                let mut target = self.bdp(self.cwnd_gain) + 3 * self.quantum();
                if self.full_bw_reached {
                    target += self.aggregation_allowance();
                }
                if self.full_bw_reached {
                    self.cwnd = (self.cwnd + acked).min(target);
                } else if self.cwnd < target
                    || rs.delivered_total < super::initial_window(self.mss) as u64
                {
                    self.cwnd += acked;
                }
                self.cwnd = self.cwnd.max(MIN_SEGMENTS * self.mss);
            }
        }
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(MIN_SEGMENTS * self.mss);
        }
        self.cwnd = self.cwnd.max(if self.on_lan() {
            self.min_cwnd()
        } else {
            self.mss
        });
    }
}

impl Default for Bbr {
    fn default() -> Self {
        Self::new()
    }
}

impl Controller for Bbr {
    fn window(&self) -> usize {
        if self.wan { self.cwnd } else { self.rwnd }
    }

    fn set_remote_window(&mut self, remote_window: usize) {
        self.rwnd = remote_window;
    }

    fn on_ack(&mut self, _now: Instant, _len: usize, _in_flight: usize, _rtt: &RttEstimator) {}

    fn on_rto(&mut self, _now: Instant, _in_flight: usize) {
        self.save_cwnd();
        self.in_recovery = true;
        self.packet_conservation = false;
        self.cwnd = self.mss;
    }

    fn on_loss(&mut self, _now: Instant, _in_flight: usize) {
        self.save_cwnd();
    }

    fn set_mss(&mut self, mss: usize) {
        let initial = self.round_count == 0 && self.cwnd == super::initial_window(self.mss);
        self.mss = mss.max(1);
        if initial {
            self.cwnd = super::initial_window(self.mss);
        }
    }

    fn set_wan_mode(&mut self, enabled: bool) {
        self.wan = enabled;
    }

    fn in_slow_start(&self) -> bool {
        self.mode == Mode::Startup
    }

    fn on_rate_sample(&mut self, now: Instant, rs: &RateSample) {
        self.update_round(rs);
        self.update_bw(rs);
        self.update_ack_aggregation(now, rs);
        self.update_cycle_phase(now, rs);
        self.check_full_bw(rs);
        self.check_drain(now, rs);
        self.update_min_rtt(now, rs);
        self.update_pacing_rate(rs);
        self.update_cwnd(rs);
    }

    fn pacing_rate(&self) -> Option<u64> {
        (self.wan && self.pacing_rate > 0).then_some(self.pacing_rate)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const MSS: usize = 1000;

    /// Drive a BBR through `rounds` rounds of a path with bandwidth `bw` (bytes/s)
    /// and RTT `rtt_us`, ACKing `MSS` bytes at a time, as if never cwnd-limited.
    fn drive(bbr: &mut Bbr, now: &mut u64, delivered: &mut u64, rounds: u32, bw: u64, rtt_us: u32) {
        for _ in 0..rounds {
            let per_round = (bw as u128 * rtt_us as u128 / 1_000_000) as u64;
            let acks = (per_round / MSS as u64).max(1);
            let round_begin = *delivered;
            for _ in 0..acks {
                *now += rtt_us as u64 / acks;
                *delivered += MSS as u64;
                let rs = RateSample {
                    acked: MSS,
                    lost: 0,
                    delivered_total: *delivered,
                    prior_delivered: Some(round_begin),
                    rate: Some((*delivered - round_begin, rtt_us as u64)),
                    app_limited: false,
                    rtt_us: Some(rtt_us),
                    prior_inflight: bbr.cwnd,
                    inflight: per_round as usize,
                    in_recovery: false,
                };
                bbr.on_rate_sample(Instant::from_micros(*now as i64), &rs);
            }
        }
    }

    fn bbr() -> Bbr {
        let mut bbr = Bbr::new();
        bbr.set_wan_mode(true);
        bbr.set_mss(MSS);
        bbr
    }

    #[test]
    fn startup_ends_when_bandwidth_stops_growing() {
        let mut bbr = bbr();
        assert_eq!(bbr.window(), 10 * MSS);
        let (mut now, mut delivered) = (0, 0);
        drive(&mut bbr, &mut now, &mut delivered, 8, 10_000_000, 50_000);
        assert!(bbr.full_bw_reached);
        assert!(
            matches!(bbr.mode, Mode::Drain | Mode::ProbeBw),
            "{:?}",
            bbr.mode
        );
        assert_eq!(bbr.max_bw(), 10_000_000);
        // cwnd = 2 BDP + 3 quanta (+ aggregation allowance) once in PROBE_BW.
        drive(&mut bbr, &mut now, &mut delivered, 4, 10_000_000, 50_000);
        assert_eq!(bbr.mode, Mode::ProbeBw);
        let bdp = 500_000;
        assert!(
            bbr.window() >= 2 * bdp && bbr.window() <= 2 * bdp + 200_000,
            "{}",
            bbr.window()
        );
        let rate = bbr.pacing_rate().unwrap();
        assert!((7_000_000..=12_500_000).contains(&rate), "{rate}");
    }

    #[test]
    fn probe_rtt_after_ten_seconds() {
        let mut bbr = bbr();
        let (mut now, mut delivered) = (0, 0);
        drive(&mut bbr, &mut now, &mut delivered, 10, 1_000_000, 100_000);
        // Later RTT samples are all higher: the min RTT expires after 10 s.
        drive(&mut bbr, &mut now, &mut delivered, 100, 1_000_000, 110_000);
        assert_eq!(bbr.mode, Mode::ProbeRtt);
        assert_eq!(bbr.window(), MIN_SEGMENTS * MSS);
    }

    #[test]
    fn lan_floor() {
        let mut bbr = bbr();
        let (mut now, mut delivered) = (0, 0);
        drive(&mut bbr, &mut now, &mut delivered, 20, 1_000_000, 200);
        assert!(bbr.window() >= LAN_FLOOR);
    }

    #[test]
    fn rto_then_restore() {
        let mut bbr = bbr();
        let (mut now, mut delivered) = (0, 0);
        drive(&mut bbr, &mut now, &mut delivered, 12, 10_000_000, 50_000);
        let before = bbr.window();
        bbr.on_rto(Instant::from_micros(now as i64), 0);
        assert_eq!(bbr.window(), MSS);
        let rs = RateSample {
            acked: MSS,
            delivered_total: delivered + MSS as u64,
            prior_delivered: Some(delivered),
            in_recovery: false,
            ..RateSample::default()
        };
        bbr.on_rate_sample(Instant::from_micros(now as i64 + 1000), &rs);
        assert!(bbr.window() >= before, "{} < {before}", bbr.window());
    }
}
