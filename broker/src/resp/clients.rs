//! [`Clients`]: the RESP connections being served, for `CLIENT LIST`,
//! `CLIENT INFO` and `INFO clients`.
//!
//! Each connection registers when it starts and is removed when it ends
//! ([`Registration`] removes it on drop, so a connection that fails in any
//! way leaves no entry behind). The table is bounded by `max_connections`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// What `CLIENT LIST` shows of one connection.
#[derive(Debug, Clone)]
pub struct ClientEntry {
    /// The client's address.
    pub addr: SocketAddr,
    /// The listener's address.
    pub laddr: SocketAddr,
    /// Set with `CLIENT SETNAME` or `HELLO … SETNAME`.
    pub name: String,
    /// Set with `CLIENT SETINFO LIB-NAME`.
    pub lib_name: String,
    /// Set with `CLIENT SETINFO LIB-VER`.
    pub lib_ver: String,
    /// When the connection was accepted.
    pub since: Instant,
    /// When its last command began.
    pub last: Instant,
    /// Its last command, as `CLIENT LIST` names it (`client|list`).
    pub cmd: String,
    /// 2 or 3.
    pub resp: u8,
    /// Inside `MULTI`: commands queued, else −1.
    pub multi: i64,
}

/// The RESP connections being served.
#[derive(Debug, Default)]
pub struct Clients {
    entries: Mutex<BTreeMap<u64, ClientEntry>>,
    next_id: AtomicU64,
    blocked: AtomicUsize,
}

/// A connection's entry; removed when this is dropped.
#[derive(Debug)]
pub struct Registration {
    clients: Arc<Clients>,
    /// The connection's id (`CLIENT ID`).
    pub id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients.entries.lock().remove(&self.id);
    }
}

/// Counts a connection as blocked while alive.
#[derive(Debug)]
pub struct Blocked<'a>(&'a Clients);

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.blocked.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Clients {
    /// Registers a new connection from `addr` accepted on `laddr`.
    pub fn register(self: &Arc<Self>, addr: SocketAddr, laddr: SocketAddr) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let entry = ClientEntry {
            addr,
            laddr,
            name: String::new(),
            lib_name: String::new(),
            lib_ver: String::new(),
            since: now,
            last: now,
            cmd: "NULL".into(),
            resp: 2,
            multi: -1,
        };
        self.entries.lock().insert(id, entry);
        Registration {
            clients: self.clone(),
            id,
        }
    }

    /// Changes connection `id`'s entry.
    pub fn update(&self, id: u64, change: impl FnOnce(&mut ClientEntry)) {
        if let Some(entry) = self.entries.lock().get_mut(&id) {
            change(entry);
        }
    }

    /// Connection `id`'s entry.
    pub fn get(&self, id: u64) -> Option<ClientEntry> {
        self.entries.lock().get(&id).cloned()
    }

    /// Every connection, by id.
    pub fn list(&self) -> Vec<(u64, ClientEntry)> {
        let entries = self.entries.lock();
        entries.iter().map(|(id, e)| (*id, e.clone())).collect()
    }

    /// Connections served now.
    pub fn connected(&self) -> usize {
        self.entries.lock().len()
    }

    /// Connections waiting in a blocking command now.
    pub fn blocked(&self) -> usize {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Counts one more blocked connection until the guard drops.
    pub fn block(&self) -> Blocked<'_> {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        Blocked(self)
    }
}

/// One `CLIENT LIST` line for connection `id`.
pub fn describe(id: u64, e: &ClientEntry) -> String {
    let now = Instant::now();
    format!(
        "id={id} addr={} laddr={} fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi={} cmd={} user=default lib-name={} lib-ver={} resp={}",
        e.addr,
        e.laddr,
        e.name,
        now.duration_since(e.since).as_secs(),
        now.duration_since(e.last).as_secs(),
        e.multi,
        e.cmd,
        e.lib_name,
        e.lib_ver,
        e.resp,
    )
}
