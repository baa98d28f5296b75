//! A small, explicit binary encoding for what the embedded backend persists.
//!
//! Integers are little-endian; strings and byte strings are prefixed with a `u32` length.
//! Decoding never panics: truncated or malformed input is a `String` reason.

use crate::{Event, KeyValue, LeaseId};

pub(crate) struct Enc(Vec<u8>);

impl Enc {
    pub(crate) fn new() -> Self {
        Enc(Vec::new())
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        // Keys and values larger than 4 GiB cannot be stored; the caller rejects them first.
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(b);
    }

    fn lease(&mut self, l: Option<LeaseId>) {
        match l {
            None => self.u8(0),
            Some(LeaseId(id)) => {
                self.u8(1);
                self.i64(id);
            }
        }
    }

    fn kv(&mut self, kv: &KeyValue) {
        self.bytes(kv.key.as_bytes());
        self.bytes(&kv.value);
        self.i64(kv.create_revision);
        self.i64(kv.mod_revision);
        self.i64(kv.version);
        self.lease(kv.lease);
    }
}

pub(crate) struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Dec(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "truncated record: need {n} bytes, {} left",
                self.0.len()
            ));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|e| format!("key is not UTF-8: {e}"))
    }

    fn lease(&mut self) -> Result<Option<LeaseId>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(LeaseId(self.i64()?))),
            t => Err(format!("bad lease tag {t}")),
        }
    }

    fn kv(&mut self) -> Result<KeyValue, String> {
        Ok(KeyValue {
            key: self.string()?,
            value: self.bytes()?.to_vec(),
            create_revision: self.i64()?,
            mod_revision: self.i64()?,
            version: self.i64()?,
            lease: self.lease()?,
        })
    }

    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.0.len()))
        }
    }
}

/// A key's stored record: everything but the key, which is the table key.
pub(crate) fn encode_kv_record(kv: &KeyValue) -> Vec<u8> {
    let mut e = Enc::new();
    e.i64(kv.create_revision);
    e.i64(kv.mod_revision);
    e.i64(kv.version);
    e.lease(kv.lease);
    e.0.extend_from_slice(&kv.value);
    e.finish()
}

pub(crate) fn decode_kv_record(key: &str, b: &[u8]) -> Result<KeyValue, String> {
    let mut d = Dec::new(b);
    let create_revision = d.i64()?;
    let mod_revision = d.i64()?;
    let version = d.i64()?;
    let lease = d.lease()?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: d.0.to_vec(),
        create_revision,
        mod_revision,
        version,
        lease,
    })
}

/// The events of one revision.
pub(crate) fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut e = Enc::new();
    e.i64(i64::try_from(events.len()).unwrap_or(i64::MAX));
    for ev in events {
        match ev {
            Event::Put { kv, prev_kv } => {
                e.u8(0);
                e.kv(kv);
                match prev_kv {
                    None => e.u8(0),
                    Some(p) => {
                        e.u8(1);
                        e.kv(p);
                    }
                }
            }
            Event::Delete {
                key,
                prev_kv,
                revision,
            } => {
                e.u8(1);
                e.bytes(key.as_bytes());
                e.i64(*revision);
                e.kv(prev_kv);
            }
        }
    }
    e.finish()
}

pub(crate) fn decode_events(b: &[u8]) -> Result<Vec<Event>, String> {
    let mut d = Dec::new(b);
    let n = d.i64()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let ev = match d.u8()? {
            0 => {
                let kv = d.kv()?;
                let prev_kv = match d.u8()? {
                    0 => None,
                    1 => Some(d.kv()?),
                    t => return Err(format!("bad prev_kv tag {t}")),
                };
                Event::Put { kv, prev_kv }
            }
            1 => {
                let key = d.string()?;
                let revision = d.i64()?;
                let prev_kv = d.kv()?;
                Event::Delete {
                    key,
                    prev_kv,
                    revision,
                }
            }
            t => return Err(format!("bad event tag {t}")),
        };
        out.push(ev);
    }
    d.end()?;
    Ok(out)
}

/// A lease: its TTL and its expiry as wall-clock milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseRecord {
    pub(crate) ttl_ms: i64,
    pub(crate) expires_at_ms: i64,
}

pub(crate) fn encode_lease(l: &LeaseRecord) -> Vec<u8> {
    let mut e = Enc::new();
    e.i64(l.ttl_ms);
    e.i64(l.expires_at_ms);
    e.finish()
}

pub(crate) fn decode_lease(b: &[u8]) -> Result<LeaseRecord, String> {
    let mut d = Dec::new(b);
    let l = LeaseRecord {
        ttl_ms: d.i64()?,
        expires_at_ms: d.i64()?,
    };
    d.end()?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, lease: Option<LeaseId>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: b"{\"a\":1}".to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            lease,
        }
    }

    #[test]
    fn roundtrip() {
        let k = kv("/a/b", Some(LeaseId(7)));
        assert_eq!(
            decode_kv_record("/a/b", &encode_kv_record(&k)),
            Ok(k.clone())
        );
        let evs = vec![
            Event::Put {
                kv: k.clone(),
                prev_kv: None,
            },
            Event::Put {
                kv: k.clone(),
                prev_kv: Some(kv("/a/b", None)),
            },
            Event::Delete {
                key: "/a/b".into(),
                prev_kv: k,
                revision: 9,
            },
        ];
        assert_eq!(decode_events(&encode_events(&evs)), Ok(evs));
        let l = LeaseRecord {
            ttl_ms: 1000,
            expires_at_ms: 123,
        };
        assert_eq!(decode_lease(&encode_lease(&l)), Ok(l));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_events(&[1, 0, 0, 0, 0, 0, 0, 0, 9]).is_err());
        assert!(decode_events(&[0xff; 3]).is_err());
        assert!(decode_kv_record("k", &[1, 2]).is_err());
        assert!(decode_lease(&[]).is_err());
    }
}
