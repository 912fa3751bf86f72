//! The fleet's keys in etcd (`etcd-client`): plugin records, plugin bytes
//! by sha256 in chunks under etcd's value limit, and each node's leased
//! report. Every unary call has the `[fleet]` timeout.

use super::desired::Desired;
use crate::config::FleetSpec;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream};
use std::future::Future;
use std::time::{Duration, Instant};

/// A call is tried again on transient errors for this many timeouts.
const RETRY_BUDGET: u32 = 3;

/// Bytes per chunk: under etcd's default 1.5 MiB request limit.
pub const CHUNK: usize = 1 << 20;

/// One connection to the fleet's etcd cluster.
#[derive(Clone)]
pub struct Store {
    client: Client,
    prefix: String,
    timeout: Duration,
}

/// A plugin record as read: its name, revision and value.
pub struct Record {
    pub name: String,
    pub revision: i64,
    pub value: Vec<u8>,
}

/// The chunk keys' suffix and the size record of one blob.
#[derive(serde::Serialize, serde::Deserialize)]
struct BlobMeta {
    len: usize,
    chunks: usize,
}

impl Store {
    pub async fn connect(spec: &FleetSpec) -> Result<Self, String> {
        // HTTP/2 pings no more often than etcd's `--grpc-keepalive-min-time`
        // (5 s by default): faster ones get the connection closed with
        // "too many pings". The lease keep-alive every 2 s finds a dead
        // store sooner anyway.
        let mut options = ConnectOptions::new().with_connect_timeout(spec.timeout).with_keep_alive(Duration::from_secs(10), spec.timeout);
        if let Some((user, password)) = &spec.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &spec.tls {
            let mut t = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(t);
        }
        let client = retrying(spec.timeout, "connect", || Client::connect(&spec.endpoints, Some(options.clone()))).await?;
        Ok(Self { client, prefix: spec.prefix.clone(), timeout: spec.timeout })
    }

    /// `call` on a clone of the client, as [`retrying`] does.
    async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, String>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        retrying(self.timeout, what, || call(self.client.clone())).await
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// One read that needs a quorum: the store answers.
    pub async fn ping(&mut self) -> Result<(), String> {
        let key = self.key("ping");
        self.call("read", |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .await
        .map(drop)
    }

    /// Whether the store holds the whole blob `sha256`.
    pub async fn has_blob(&mut self, sha256: &str) -> Result<bool, String> {
        let key = self.key(&format!("blobs/{sha256}/meta"));
        let resp = self.call("read", |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .await?;
        Ok(resp.count() > 0)
    }

    /// Store `bytes` under their sha256 unless the store has them.
    pub async fn put_blob(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), String> {
        if self.has_blob(sha256).await? {
            return Ok(());
        }
        self.write_blob(sha256, bytes).await
    }

    /// Write `bytes` as blob `sha256`: chunks first and the size record
    /// last, so a reader never sees half a blob.
    pub async fn write_blob(&self, sha256: &str, bytes: &[u8]) -> Result<(), String> {
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            self.put(self.key(&format!("blobs/{sha256}/{i:05}")), chunk.to_vec(), None).await?;
        }
        let meta = serde_json::to_vec(&BlobMeta { len: bytes.len(), chunks: chunks.len() }).expect("serializes");
        self.put(self.key(&format!("blobs/{sha256}/meta")), meta, None).await
    }

    async fn put(&self, key: String, value: Vec<u8>, options: Option<PutOptions>) -> Result<(), String> {
        self.call("write", |mut c| {
            let (key, value, options) = (key.clone(), value.clone(), options.clone());
            async move { c.put(key, value, options).await }
        })
        .await
        .map(drop)
    }

    async fn get(&self, key: String, options: Option<GetOptions>) -> Result<etcd_client::GetResponse, String> {
        self.call("read", |mut c| {
            let (key, options) = (key.clone(), options.clone());
            async move { c.get(key, options).await }
        })
        .await
    }

    /// The bytes stored under `sha256`, checked against it.
    pub async fn blob(&mut self, sha256: &str) -> Result<Vec<u8>, String> {
        let resp = self.get(self.key(&format!("blobs/{sha256}/meta")), None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Err(format!("the store has no bytes for sha256 {sha256}"));
        };
        let meta: BlobMeta = serde_json::from_slice(kv.value()).map_err(|e| format!("the size record of {sha256} is not valid: {e}"))?;
        let mut bytes = Vec::with_capacity(meta.len);
        for i in 0..meta.chunks {
            let resp = self.get(self.key(&format!("blobs/{sha256}/{i:05}")), None).await?;
            let chunk = resp.kvs().first().ok_or_else(|| format!("chunk {i} of {sha256} is missing from the store"))?;
            bytes.extend_from_slice(chunk.value());
        }
        let got = crate::wasm::sha256_hex(&bytes);
        if got != sha256 {
            return Err(format!("the bytes stored as {sha256} hash to {got}: refused"));
        }
        Ok(bytes)
    }

    /// Every plugin record, and the store's revision they were read at.
    pub async fn records(&mut self) -> Result<(i64, Vec<Record>), String> {
        let prefix = self.key("plugins/");
        let resp = self.get(prefix.clone(), Some(GetOptions::new().with_prefix())).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let records = resp
            .kvs()
            .iter()
            .filter_map(|kv| Some(Record { name: kv.key_str().ok()?.strip_prefix(&prefix)?.to_string(), revision: kv.mod_revision(), value: kv.value().to_vec() }))
            .collect();
        Ok((revision, records))
    }

    /// Write a plugin's record; with `if_revision`, only if the record
    /// is still the one read at that revision (0: absent). Returns the new
    /// revision, or `None` when someone wrote first.
    pub async fn put_record(&mut self, name: &str, want: &Desired, if_revision: Option<i64>) -> Result<Option<i64>, String> {
        let key = self.key(&format!("plugins/{name}"));
        let value = serde_json::to_vec(want).expect("serializes");
        let txn = match if_revision {
            Some(rev) => Txn::new().when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)]).and_then([TxnOp::put(key, value, None)]),
            None => Txn::new().and_then([TxnOp::put(key, value, None)]),
        };
        let resp = self.call("write", |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        Ok(resp.succeeded().then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// Every node's report, and the revision they were read at.
    pub async fn reports(&mut self) -> Result<(i64, Vec<(String, Vec<u8>)>), String> {
        let prefix = self.key("nodes/");
        let resp = self.get(prefix.clone(), Some(GetOptions::new().with_prefix())).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let reports = resp.kvs().iter().filter_map(|kv| Some((kv.key_str().ok()?.strip_prefix(&prefix)?.to_string(), kv.value().to_vec()))).collect();
        Ok((revision, reports))
    }

    /// A lease for this node's report: it goes when the node does.
    pub async fn lease(&mut self, ttl_s: i64) -> Result<i64, String> {
        Ok(self.call("lease", |mut c| async move { c.lease_grant(ttl_s, None).await }).await?.id())
    }

    /// Keep `lease` alive once; an error when the store does not answer.
    pub async fn keep_alive(&mut self, lease: i64) -> Result<(), String> {
        let (mut keeper, mut stream) = within(self.timeout, "lease", self.client.lease_keep_alive(lease)).await?;
        within(self.timeout, "lease", keeper.keep_alive()).await?;
        match within(self.timeout, "lease", stream.message()).await? {
            Some(r) if r.ttl() > 0 => Ok(()),
            _ => Err("the store let this node's lease expire".into()),
        }
    }

    /// Write this node's report under its lease.
    pub async fn report(&mut self, node: &str, lease: i64, report: &serde_json::Value) -> Result<(), String> {
        self.put(self.key(&format!("nodes/{node}")), serde_json::to_vec(report).expect("serializes"), Some(PutOptions::new().with_lease(lease))).await
    }

    /// Watch the keys under `PREFIX/{under}` from `revision` on.
    pub async fn watch(&mut self, under: &str, revision: i64) -> Result<WatchStream, String> {
        let options = WatchOptions::new().with_prefix().with_start_revision(revision);
        within(self.timeout, "watch", self.client.watch(self.key(under), Some(options))).await
    }
}

/// `call`, each try within `timeout`, tried again on a transient error
/// (a leader election, a member down) for up to [`RETRY_BUDGET`]
/// timeouts; other errors are named.
async fn retrying<T, F, Fut>(timeout: Duration, what: &str, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + timeout * RETRY_BUDGET;
    let mut wait = Duration::from_millis(50);
    loop {
        let last = Instant::now() + wait >= deadline;
        match tokio::time::timeout(timeout, call()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if transient(&e) && !last => {}
            Ok(Err(e)) => return Err(format!("etcd {what}: {e}")),
            Err(_) if !last => {}
            Err(_) => return Err(format!("etcd {what}: no answer within {} ms", timeout.as_millis())),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(500));
    }
}

/// An error worth another try: the store is electing a leader, or the
/// member the call went to is down.
fn transient(e: &etcd_client::Error) -> bool {
    match e {
        // UNKNOWN (a broken connection), DEADLINE_EXCEEDED, ABORTED, UNAVAILABLE.
        etcd_client::Error::GRpcStatus(s) => [2, 4, 10, 14].contains(&i32::from(s.code())),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// `call` within `timeout`, its error named.
async fn within<T>(timeout: Duration, what: &str, call: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd {what}: {e}")),
        Err(_) => Err(format!("etcd {what}: no answer within {} ms", timeout.as_millis())),
    }
}
