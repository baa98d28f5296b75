//! What vxlan peers exchange: the VTEP MAC (derived, stable) and flannel's backend-data JSON
//! (`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`).

use podnet_kernel::link::{format_mac, parse_mac};
use serde::{Deserialize, Serialize};

/// flannel's vxlan lease attributes, with its JSON field names.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseAttrs {
    /// flannel always writes it; tolerated as missing so an older peer still works.
    #[serde(rename = "VNI", default, skip_serializing_if = "Option::is_none")]
    vni: Option<u32>,
    #[serde(rename = "VtepMAC", default)]
    vtep_mac: Option<String>,
}

/// A peer's vxlan data, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerVtep {
    pub vni: Option<u32>,
    pub mac: [u8; 6],
}

/// The MAC of this node's VTEP: a hash of (node name, VNI), made locally administered and
/// unicast. Being a function of the node alone, a device recreated after a hand deletion
/// gets the same MAC back and the peers' neighbour entries stay right.
pub fn vtep_mac(node: &str, vni: u32) -> [u8; 6] {
    // FNV-1a: stable across Rust releases and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = node.bytes().chain([0]).chain(vni.to_be_bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let h = hash.to_be_bytes();
    // Bit 1 of the first octet: locally administered; bit 0 clear: unicast.
    [(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
}

/// The backend-data annotation this node publishes.
pub fn encode(vni: u32, mac: &[u8; 6]) -> String {
    let attrs = LeaseAttrs {
        vni: Some(vni),
        vtep_mac: Some(format_mac(mac)),
    };
    // Serialising two plain fields cannot fail; the fallback keeps the format anyway.
    serde_json::to_string(&attrs)
        .unwrap_or_else(|_| format!(r#"{{"VNI":{vni},"VtepMAC":"{}"}}"#, format_mac(mac)))
}

/// Parses a peer's backend-data annotation; the error says what is wrong with it.
pub fn decode(json: &str) -> Result<PeerVtep, String> {
    let attrs: LeaseAttrs = serde_json::from_str(json)
        .map_err(|e| format!("its vxlan backend data {json:?} is not valid JSON: {e}"))?;
    let text = attrs
        .vtep_mac
        .ok_or_else(|| format!("its vxlan backend data {json:?} has no VtepMAC yet"))?;
    let mac = parse_mac(&text)
        .ok_or_else(|| format!("its VtepMAC {text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(format!(
            "its VtepMAC {text} is not a unicast address (a VTEP needs one)"
        ));
    }
    Ok(PeerVtep {
        vni: attrs.vni,
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_mac_is_stable_local_unicast_and_depends_on_node_and_vni() {
        let mac = vtep_mac("node-1", 1);
        assert_eq!(mac, vtep_mac("node-1", 1), "same input, same MAC");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_ne!(mac, vtep_mac("node-2", 1));
        assert_ne!(mac, vtep_mac("node-1", 2));
        // Pinned: a change of derivation would change every node's MAC on upgrade.
        let pinned = vtep_mac("n", 1);
        assert_eq!(
            pinned,
            PINNED_N_1,
            "derivation changed: {}",
            format_mac(&pinned)
        );
    }

    const PINNED_N_1: [u8; 6] = [0x96, 0x37, 0xdb, 0x89, 0x7b, 0x80];

    #[test]
    fn backend_data_round_trips_with_flannels_field_names() {
        let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x00];
        let json = encode(1, &mac);
        assert_eq!(json, r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:00"}"#);
        assert_eq!(decode(&json), Ok(PeerVtep { vni: Some(1), mac }));
        // flannel's own annotation, as its nodes publish it.
        let theirs = decode(r#"{"VNI":1,"VtepMAC":"6e:7b:1c:5a:90:13"}"#).unwrap();
        assert_eq!(theirs.mac, [0x6e, 0x7b, 0x1c, 0x5a, 0x90, 0x13]);
        assert_eq!(
            decode(r#"{"VtepMAC":"6e:7b:1c:5a:90:13"}"#).unwrap().vni,
            None
        );
    }

    #[test]
    fn unusable_backend_data_says_why() {
        for (json, says) in [
            ("{", "not valid JSON"),
            (r#"{"VNI":1}"#, "no VtepMAC yet"),
            (r#"{"VNI":1,"VtepMAC":"zz"}"#, "not a MAC address"),
            (
                r#"{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}"#,
                "not a unicast",
            ),
            (
                r#"{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}"#,
                "not a unicast",
            ),
        ] {
            let err = decode(json).unwrap_err();
            assert!(err.contains(says), "{json}: {err}");
        }
    }
}
