//! Rate limits shared by replicas: the GCRA (the algorithm governor runs locally) evaluated
//! atomically inside Redis, every bucket a call touches in one script call, so a check costs one
//! round trip whatever the number of rules.
//!
//! Order inside the script: read Redis's own clock (one clock for every replica, so their
//! clocks need not agree); then for each bucket in rule order, refuse if its theoretical
//! arrival time (TAT) is more than the tolerance ahead of now, else advance the TAT by one
//! emission interval and store it with a TTL that ends exactly when the bucket is full again
//! (an expired key and a full bucket are the same thing, so idle keys cost no memory). The first
//! refusal stops the walk: earlier buckets keep the cell they took, as the local limiter does.
//!
//! `redis::Script` sends EVALSHA and falls back to EVAL (loading the script) when Redis does
//! not know it yet, e.g. after a restart.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::redis_store::RedisStore;
use super::StoreError;

/// Times are in microseconds: well inside Lua's 2^53 exact integers for epoch times, and finer
/// than any configured rate needs. `%.0f` keeps the stored TAT an exact integer string (Lua's
/// default number format would round it to 14 digits).
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  if now < tat - tolerance then
    return {i, tat - tolerance - now}
  end
  local next_tat = tat + interval
  redis.call('SET', key, string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
end
return {0, 0}
";

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_LUA));

/// One bucket a call must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GcraBucket {
    /// The key without the store prefix, e.g. `rl:token:<hash>`.
    pub key: String,
    /// Time one call uses up: the rate's period divided by its count.
    pub interval: Duration,
    /// How far ahead of now the TAT may run: `interval * (burst - 1)`, as governor has it.
    pub tolerance: Duration,
}

/// What Redis decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GcraVerdict {
    Allowed,
    /// Refused by the bucket at this index; a call would pass after `retry_after`.
    Refused {
        index: usize,
        retry_after: Duration,
    },
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RedisStore {
    /// Checks and counts one call against `buckets`, in order, in one round trip.
    pub(crate) async fn gcra(&self, buckets: &[GcraBucket]) -> Result<GcraVerdict, StoreError> {
        if buckets.is_empty() {
            return Ok(GcraVerdict::Allowed);
        }
        let mut invocation = GCRA.prepare_invoke();
        for b in buckets {
            invocation
                .key(self.key(&b.key))
                .arg(micros(b.interval).max(1))
                .arg(micros(b.tolerance));
        }
        let mut conn = self.conn().await?;
        let (index, wait_us): (i64, i64) = invocation.invoke_async(&mut conn).await?;
        Ok(match usize::try_from(index) {
            Ok(i) if i >= 1 => GcraVerdict::Refused {
                index: i - 1,
                retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
            },
            _ => GcraVerdict::Allowed,
        })
    }
}
