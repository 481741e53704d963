//! Messages between replicas: `publish` on one, every `subscribe`r on every replica hears it.
//!
//! Order of things:
//! 1. `subscribe(channel)` registers a local fan-out (a tokio broadcast channel) under the full
//!    name (`store.redis_key_prefix` + channel) and, with Redis, starts the hub's one background
//!    task on first use.
//! 2. The task opens a dedicated pub/sub connection (a subscribed Redis connection can do
//!    nothing else), subscribes every registered channel, then bumps the *epoch*: a subscriber
//!    that sees the epoch move may have missed messages while the connection was down and
//!    should re-read whatever state it keeps in keys.
//! 3. Each message goes to its channel's broadcast sender. A lost connection (Redis stopped,
//!    frozen past the ping timeout, network gone) is re-made with backoff, back to step 2.
//! 4. `publish` is an ordinary PUBLISH over the store's ordinary connection.
//!
//! The memory store has no other replica: it delivers to its own subscribers at once.
//! The task holds only a weak reference: it ends when the last clone of the store is dropped
//! (a reload builds a new store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{broadcast, mpsc, watch};

use super::StoreError;

/// Messages a slow subscriber may fall behind by before it sees `Lagged`.
const CHANNEL_CAPACITY: usize = 256;
/// Bounds for connecting and for each subscribe or ping on the pub/sub connection.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle pub/sub connection is checked: a frozen Redis or a dead peer sends no FIN.
const PING_EVERY: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The pub/sub side of a store, shared by its clones.
#[derive(Clone)]
pub(crate) struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    /// Put before every channel name, as before every key.
    prefix: String,
    /// Full channel name -> local fan-out to this process's subscribers.
    channels: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
    /// Moves each time the subscriptions are (re)established (see the module docs).
    epoch: watch::Sender<u64>,
    /// Where messages come from: None delivers locally only (the memory store).
    redis: Option<RedisSide>,
}

struct RedisSide {
    /// Opens the dedicated pub/sub connection (and each reconnection).
    client: redis::Client,
    /// Tells the running task about channels added after it connected; None until the first
    /// subscribe starts the task.
    task: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl Hub {
    /// For the memory store: messages stay in this process.
    pub(crate) fn local(prefix: &str) -> Hub {
        Hub::build(prefix, None)
    }

    /// For the Redis store: `client` opens the pub/sub connection.
    pub(crate) fn redis(prefix: &str, client: redis::Client) -> Hub {
        Hub::build(
            prefix,
            Some(RedisSide {
                client,
                task: Mutex::new(None),
            }),
        )
    }

    fn build(prefix: &str, redis: Option<RedisSide>) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                prefix: prefix.to_owned(),
                channels: Mutex::new(HashMap::new()),
                epoch: watch::Sender::new(0),
                redis,
            }),
        }
    }

    /// The channel's name in Redis.
    pub(crate) fn full_name(&self, channel: &str) -> String {
        format!("{}{}", self.inner.prefix, channel)
    }

    /// Every later message on `channel`, from any replica (this one included).
    pub(crate) fn subscribe(&self, channel: &str) -> broadcast::Receiver<Bytes> {
        let name = self.full_name(channel);
        let (receiver, added) = {
            let mut channels = lock(&self.inner.channels);
            match channels.get(&name) {
                Some(sender) => (sender.subscribe(), false),
                None => {
                    let (sender, receiver) = broadcast::channel(CHANNEL_CAPACITY);
                    channels.insert(name.clone(), sender);
                    (receiver, true)
                }
            }
        };
        if added {
            self.tell_task(name);
        }
        receiver
    }

    /// Changes each time the subscriptions are (re)established; starts at 0, and the memory
    /// store never moves it.
    pub(crate) fn epochs(&self) -> watch::Receiver<u64> {
        self.inner.epoch.subscribe()
    }

    /// The memory store's publish: straight to this process's subscribers.
    pub(crate) fn deliver_local(&self, channel: &str, payload: &[u8]) {
        let name = self.full_name(channel);
        deliver(&self.inner, &name, payload);
    }

    /// Starts the task on first use, else hands it the new channel.
    fn tell_task(&self, name: String) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let mut task = lock(&redis.task);
        if let Some(tx) = task.as_ref() {
            if tx.send(name).is_ok() {
                return;
            }
        }
        // Not started yet (or it ended): the new task reads every channel from the map.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("redis pub/sub needs a tokio runtime; messages will not arrive");
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        runtime.spawn(run(Arc::downgrade(&self.inner), redis.client.clone(), rx));
        *task = Some(tx);
    }
}

/// PUBLISH over the store's ordinary connection. `full_name` from [`Hub::full_name`].
pub(crate) async fn publish(
    conn: &mut ConnectionManager,
    full_name: &str,
    payload: &[u8],
) -> Result<(), StoreError> {
    let _receivers: i64 = redis::cmd("PUBLISH")
        .arg(full_name)
        .arg(payload)
        .query_async(conn)
        .await?;
    Ok(())
}

/// A message that is also kept under `full_key` for `keep` (None deletes the key), in one
/// MULTI, so a replica that (re)connects later reads the last word with [`retained`].
pub(crate) async fn publish_retained(
    conn: &mut ConnectionManager,
    full_name: &str,
    full_key: &str,
    payload: &[u8],
    keep: Option<Duration>,
) -> Result<(), StoreError> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    match keep {
        Some(ttl) => pipe
            .cmd("SET")
            .arg(full_key)
            .arg(payload)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .ignore(),
        None => pipe.cmd("DEL").arg(full_key).ignore(),
    };
    pipe.cmd("PUBLISH").arg(full_name).arg(payload).ignore();
    let () = pipe.query_async(conn).await?;
    Ok(())
}

/// The message kept under `full_key` and how long it is still kept.
pub(crate) async fn retained(
    conn: &mut ConnectionManager,
    full_key: &str,
) -> Result<Option<(Vec<u8>, Duration)>, StoreError> {
    let (value, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(full_key)
        .cmd("PTTL")
        .arg(full_key)
        .query_async(conn)
        .await?;
    Ok(value.map(|v| {
        let left = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
        (v, left)
    }))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent whatever panicked while holding them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn deliver(inner: &Inner, name: &str, payload: &[u8]) {
    let channels = lock(&inner.channels);
    if let Some(sender) = channels.get(name) {
        // No receiver left is not an error: nobody is listening on this replica.
        let _ = sender.send(Bytes::copy_from_slice(payload));
    }
}

/// Why one connection ended; the task reconnects after any of them except `Stop`.
enum Ended {
    Lost(String),
    Stop,
}

/// The background task: connect, subscribe, forward, reconnect; ends with the hub.
async fn run(hub: Weak<Inner>, client: redis::Client, mut added: mpsc::UnboundedReceiver<String>) {
    let mut backoff = MIN_BACKOFF;
    let mut failures = 0u32;
    loop {
        let names: Vec<String> = match hub.upgrade() {
            Some(inner) => lock(&inner.channels).keys().cloned().collect(),
            None => return,
        };
        match connect(&client, &names).await {
            Ok((sink, stream)) => {
                backoff = MIN_BACKOFF;
                if failures > 0 {
                    tracing::info!("redis pub/sub connection re-established");
                }
                failures = 0;
                match hub.upgrade() {
                    Some(inner) => inner.epoch.send_modify(|e| *e += 1),
                    None => return,
                }
                match forward(&hub, sink, stream, &mut added).await {
                    Ended::Stop => return,
                    Ended::Lost(why) => {
                        tracing::warn!(error = %why, "redis pub/sub connection lost; reconnecting");
                    }
                }
            }
            Err(e) => {
                // One line per outage, not one per attempt.
                if failures == 0 {
                    tracing::warn!(error = %e, "redis pub/sub cannot connect; retrying");
                }
                failures += 1;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            more = added.recv() => if more.is_none() { return },
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(
    client: &redis::Client,
    names: &[String],
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), String> {
    let pubsub = tokio::time::timeout(OP_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut sink, stream) = pubsub.split();
    if !names.is_empty() {
        tokio::time::timeout(OP_TIMEOUT, sink.subscribe(names))
            .await
            .map_err(|_| "subscribe timed out".to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok((sink, stream))
}

/// Forwards messages until the connection is lost or the hub is gone.
async fn forward(
    hub: &Weak<Inner>,
    mut sink: redis::aio::PubSubSink,
    mut stream: redis::aio::PubSubStream,
    added: &mut mpsc::UnboundedReceiver<String>,
) -> Ended {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Ended::Lost("connection closed".into());
                };
                let Some(inner) = hub.upgrade() else {
                    return Ended::Stop;
                };
                deliver(&inner, msg.get_channel_name(), msg.get_payload_bytes());
            }
            name = added.recv() => {
                let Some(name) = name else {
                    return Ended::Stop;
                };
                match tokio::time::timeout(OP_TIMEOUT, sink.subscribe(&name)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Ended::Lost(e.to_string()),
                    Err(_) => return Ended::Lost("subscribe timed out".into()),
                }
            }
            _ = ping.tick() => {
                // Any reply proves the connection: a subscribed connection answers PING with
                // ["pong", ""] (RESP2), an unsubscribed one with PONG.
                match tokio::time::timeout(OP_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ended::Lost(e.to_string()),
                    Err(_) => return Ended::Lost("ping timed out".into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_hub_delivers_to_every_subscriber_of_the_channel() {
        let hub = Hub::local("p:");
        let mut a = hub.subscribe("news");
        let mut b = hub.subscribe("news");
        let mut other = hub.subscribe("other");
        hub.deliver_local("news", b"hello");
        assert_eq!(a.recv().await.unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(b.recv().await.unwrap(), Bytes::from_static(b"hello"));
        assert!(other.try_recv().is_err());
        assert_eq!(hub.full_name("news"), "p:news");
        assert_eq!(*hub.epochs().borrow(), 0);
    }

    #[tokio::test]
    async fn the_task_ends_with_the_hub() {
        // Nothing listens on port 9: the task keeps retrying until the hub is dropped.
        let client = redis::Client::open("redis://127.0.0.1:9/0").unwrap();
        let hub = Hub::redis("p:", client);
        let _rx = hub.subscribe("c");
        let tx = lock(&hub.inner.redis.as_ref().unwrap().task)
            .clone()
            .unwrap();
        drop(hub);
        // The receiver inside the task is dropped when the task returns.
        tokio::time::timeout(Duration::from_secs(10), tx.closed())
            .await
            .expect("pub/sub task did not stop");
    }
}
