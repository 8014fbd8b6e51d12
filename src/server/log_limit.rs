//! A budget for log lines a client can cause: at most `LINES_PER_SEC` a second,
//! then a count of what was left out, so a hostile client cannot flood the log.

use std::time::{Duration, Instant};

use log::warn;

/// The most client-caused log lines per second.
const LINES_PER_SEC: u32 = 10;

pub struct LogLimit {
    second: Instant,
    count: u32,
    suppressed: u64,
}

impl LogLimit {
    pub fn new(now: Instant) -> LogLimit {
        LogLimit {
            second: now,
            count: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be logged at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            if self.suppressed > 0 {
                warn!("{} similar messages suppressed", self.suppressed);
            }
            self.second = now;
            self.count = 0;
            self.suppressed = 0;
        }
        self.count += 1;
        if self.count > LINES_PER_SEC {
            self.suppressed += 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_ten_lines_a_second() {
        let start = Instant::now();
        let mut limit = LogLimit::new(start);
        let allowed = (0..100).filter(|_| limit.allow(start)).count();
        assert_eq!(allowed, 10);
        assert!(limit.allow(start + Duration::from_secs(1)));
    }
}
