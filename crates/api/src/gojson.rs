//! Request bodies decoded the way dockerd's Go decoder reads them, so that clients written
//! against dockerd (the Docker SDKs, compose tools, the docker CLI) are understood the same.
//!
//! Go's `encoding/json` leaves a field at its zero value when the JSON says `null` (for a
//! string, a bool or a number as much as for a map, a slice or a pointer), and dockerd reads an
//! empty body as an empty object. serde refuses `null` for a `String` or a `bool`; rather than
//! annotate every field, `null` members of objects are dropped before decoding, which gives the
//! field its default — Go's zero value.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes `body` as Go would into a fresh `T`: an empty body or a bare `null` is `T::default()`,
/// and every `null` member of an object, at any depth, reads as absent.
pub fn from_slice<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, serde_json::Error> {
    if body.is_empty() {
        return Ok(T::default());
    }
    let mut v: Value = serde_json::from_slice(body)?;
    if v.is_null() {
        return Ok(T::default());
    }
    drop_nulls(&mut v);
    serde_json::from_value(v)
}

/// Removes every `null` member of every object inside `v` (array elements are kept: Go would
/// decode them as zero values of the element type, which serde cannot know here).
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest};

    #[test]
    fn nulls_read_as_go_zero_values() {
        let body = br#"{"Name":"n","Driver":null,"Scope":null,"EnableIPv6":null,
            "IPAM":{"Driver":null,"Options":null,"Config":[{"Subnet":"10.1.0.0/24",
            "IPRange":null,"Gateway":null,"AuxiliaryAddresses":null}]},
            "Internal":null,"Attachable":null,"Ingress":null,"ConfigOnly":null,
            "ConfigFrom":null,"Options":null,"Labels":null,"CheckDuplicate":null}"#;
        let r: NetworkCreateRequest = from_slice(body).expect("decodes");
        assert_eq!(r.name, "n");
        assert_eq!(r.driver, "");
        assert!(!r.internal && r.enable_ipv6.is_none() && r.config_from.is_none());
        let ipam = r.ipam.expect("IPAM");
        assert_eq!(ipam.options, None);
        let cfg = ipam.config.expect("Config");
        assert_eq!(cfg[0].subnet, "10.1.0.0/24");
        assert_eq!(cfg[0].ip_range, "");
        assert_eq!(cfg[0].aux_addresses, None);
        let r: NetworkCreateRequest = from_slice(br#"{"Name":"n","IPAM":null}"#).expect("IPAM");
        assert!(r.ipam.is_none());
    }

    #[test]
    fn empty_bodies_are_empty_objects() {
        let c: NetworkConnectRequest = from_slice(b"").expect("empty");
        assert_eq!(c.container, "");
        let c: NetworkConnectRequest = from_slice(b"null").expect("null");
        assert!(c.endpoint_config.is_none());
        let d: NetworkDisconnectRequest = from_slice(b"{}").expect("{}");
        assert!(d.container.is_empty() && !d.force);
        let d: NetworkDisconnectRequest =
            from_slice(br#"{"Container":null,"Force":null}"#).expect("nulls");
        assert!(d.container.is_empty() && !d.force);
    }

    #[test]
    fn wrong_types_and_bad_json_are_errors() {
        assert!(from_slice::<NetworkCreateRequest>(br#"{"Name":5}"#).is_err());
        assert!(from_slice::<NetworkCreateRequest>(br#"{"Internal":"yes"}"#).is_err());
        assert!(from_slice::<NetworkCreateRequest>(b"[1]").is_err());
        assert!(from_slice::<NetworkCreateRequest>(b"{").is_err());
        assert!(from_slice::<NetworkCreateRequest>(br#"{} {}"#).is_err());
        assert!(from_slice::<NetworkCreateRequest>(b" ").is_err());
    }
}
