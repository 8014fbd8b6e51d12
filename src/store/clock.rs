//! The store's coarse clock: whole seconds since the process started, as
//! memcached keeps its `current_time`, and the mapping of protocol expiration
//! times onto it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Expiration values up to this many seconds are relative; larger ones are
/// absolute unix times (memcached's REALTIME_MAXDELTA, 30 days).
pub const RELATIVE_EXPTIME_MAX_SECS: u32 = 60 * 60 * 24 * 30;

/// Our time starts at 2 seconds, as memcached's does, so that 1 can mean
/// "already expired" and 0 "never".
const START_SECS: u32 = 2;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Unix time (seconds) that corresponds to relative time 0.
    epoch_unix: u64,
    /// Relative seconds now; refreshed once per loop turn.
    now: u32,
    /// Relative seconds at `started` (later than START_SECS after a warm restart,
    /// whose clock carries on the stopped process's time line).
    base: u32,
    started: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Clock {
            epoch_unix: unix.saturating_sub(u64::from(START_SECS)),
            now: START_SECS,
            base: START_SECS,
            started: Instant::now(),
        }
    }

    /// Carries on the time line of a stopped process whose relative time 0 was
    /// unix time `epoch_unix`, so that its items' expiry times keep their meaning
    /// and TTLs count through the downtime. None if that time line does not
    /// reach now (a clock set back) or is too long to count in 32 bits.
    pub fn resume(epoch_unix: u64) -> Option<Clock> {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let now = u32::try_from(unix.checked_sub(epoch_unix)?).ok()?;
        (START_SECS..u32::MAX / 2).contains(&now).then(|| Clock {
            epoch_unix,
            now,
            base: now,
            started: Instant::now(),
        })
    }

    /// Unix time of relative time 0.
    pub fn epoch_unix(&self) -> u64 {
        self.epoch_unix
    }

    /// Sets the time from an instant the caller already read (the event loop reads
    /// the clock once per turn).
    pub fn refresh_at(&mut self, instant: Instant) {
        let elapsed = instant.saturating_duration_since(self.started).as_secs();
        self.now = self
            .base
            .saturating_add(u32::try_from(elapsed).unwrap_or(u32::MAX));
    }

    /// Moves time forward by `secs` (tests and fuzzing drive time by hand).
    pub fn advance(&mut self, secs: u32) {
        self.now = self.now.saturating_add(secs);
    }

    /// Relative seconds now.
    #[inline]
    pub fn now(&self) -> u32 {
        self.now
    }

    /// Unix time now.
    pub fn unix_now(&self) -> u64 {
        self.epoch_unix + u64::from(self.now)
    }

    /// Relative seconds at which an item with protocol expiration `exptime`
    /// expires: 0 = never; <= 30 days = from now; larger = absolute unix time,
    /// already past (1) if it is not after our start.
    pub fn expiry(&self, exptime: u32) -> u32 {
        if exptime == 0 {
            0
        } else if exptime <= RELATIVE_EXPTIME_MAX_SECS {
            self.now.saturating_add(exptime)
        } else if u64::from(exptime) <= self.epoch_unix {
            1
        } else {
            u32::try_from(u64::from(exptime) - self.epoch_unix).unwrap_or(u32::MAX)
        }
    }

    /// Whether an item with relative expiry `expiry` is expired now.
    #[inline]
    pub fn is_expired(&self, expiry: u32) -> bool {
        expiry != 0 && expiry <= self.now
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_never() {
        let clock = Clock::start();
        assert_eq!(clock.expiry(0), 0);
        assert!(!clock.is_expired(0));
    }

    #[test]
    fn relative_and_absolute_times() {
        let mut clock = Clock::start();
        let rel = clock.expiry(10);
        assert_eq!(rel, clock.now() + 10);
        let abs = clock.expiry((clock.unix_now() + 10) as u32);
        assert_eq!(abs, rel);
        assert_eq!(clock.expiry(RELATIVE_EXPTIME_MAX_SECS + 1), 1);
        assert!(clock.is_expired(1));
        clock.advance(10);
        assert!(clock.is_expired(rel));
    }

    #[test]
    fn a_resumed_clock_carries_on_the_old_time_line() {
        let old = Clock::start();
        let resumed = Clock::resume(old.epoch_unix() - 100).unwrap();
        assert!((100..=103).contains(&(resumed.now() - old.now())));
        assert_eq!(resumed.expiry(10), resumed.now() + 10);
        let future = old.unix_now() + 3600;
        assert!(Clock::resume(future).is_none(), "a clock set back");
    }

    #[test]
    fn u32_max_is_a_time_in_2106_not_minus_one() {
        let clock = Clock::start();
        let expiry = clock.expiry(u32::MAX);
        assert!(!clock.is_expired(expiry));
    }
}
