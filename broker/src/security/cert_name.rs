//! The subject common name (CN) of an X.509 certificate, read from its DER
//! bytes by a small bounds-checked DER walker.
//!
//! Only the path to the subject is walked:
//!
//! ```text
//! Certificate     ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
//! TBSCertificate  ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER,
//!                                signature SEQUENCE, issuer Name, validity SEQUENCE,
//!                                subject Name, ... }
//! Name            ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
//! ```
//!
//! | element | tag |
//! | --- | --- |
//! | SEQUENCE / SET | `0x30` / `0x31` |
//! | `[0]` version | `0xA0` |
//! | INTEGER / OID | `0x02` / `0x06` |
//! | commonName OID 2.5.4.3 | `06 03 55 04 03` |
//! | value: UTF8String, PrintableString, IA5String | `0x0C`, `0x13`, `0x16` |
//!
//! Lengths are DER's: one byte below `0x80`, else `0x81`–`0x84` followed by
//! that many big-endian length bytes. Every length is checked against the
//! bytes that remain before anything is sliced, so a malformed certificate
//! gives `None`, never a panic. The certificates it reads were already
//! verified by the TLS layer; a subject with no CN, several CNs or a CN in
//! another string type gives `None` (the connection then authenticates
//! some other way).

/// The commonName attribute type, 2.5.4.3, as DER OID content bytes.
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

/// The one subject CN of the DER certificate `der`, if it has exactly one
/// in a string type read here.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (certificate, _) = element(der, 0x30)?;
    let (tbs, _) = element(certificate, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        rest = element(rest, 0xA0)?.1;
    }
    // serialNumber, signature, issuer, validity
    for tag in [0x02, 0x30, 0x30, 0x30] {
        rest = element(rest, tag)?.1;
    }
    let (subject, _) = element(rest, 0x30)?;
    let mut names = Vec::new();
    let mut sets = subject;
    while !sets.is_empty() {
        let (set, after) = element(sets, 0x31)?;
        sets = after;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, after) = element(attributes, 0x30)?;
            attributes = after;
            let (oid, value) = element(attribute, 0x06)?;
            if oid == COMMON_NAME_OID {
                names.push(string_value(value)?);
            }
        }
    }
    match <[String; 1]>::try_from(names) {
        Ok([name]) => Some(name),
        Err(_) => None,
    }
}

/// A string attribute value (the whole remainder of the attribute).
fn string_value(bytes: &[u8]) -> Option<String> {
    let tag = *bytes.first()?;
    if !matches!(tag, 0x0C | 0x13 | 0x16) {
        return None;
    }
    let (content, rest) = element(bytes, tag)?;
    if !rest.is_empty() {
        return None;
    }
    String::from_utf8(content.to_vec()).ok()
}

/// The content of the DER element at the start of `bytes`, which must
/// have tag `tag`, and the bytes after it.
fn element(bytes: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = bytes.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = match first {
        0..=0x7F => (usize::from(first), rest),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7F);
            if rest.len() < count {
                return None;
            }
            let (digits, rest) = rest.split_at(count);
            let length = digits
                .iter()
                .fold(0usize, |n, &d| (n << 8) | usize::from(d));
            (length, rest)
        }
        _ => return None,
    };
    if rest.len() < length {
        return None;
    }
    Some(rest.split_at(length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn certificate(cn: Option<&str>, org: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(org) = org {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, org);
        }
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn the_subject_common_name_is_read() {
        let der = certificate(Some("billing"), Some("Pigeon tests"));
        assert_eq!(common_name(&der).as_deref(), Some("billing"));
        let der = certificate(Some("ops-ünïcode"), None);
        assert_eq!(common_name(&der).as_deref(), Some("ops-ünïcode"));
    }

    #[test]
    fn a_subject_without_a_common_name_gives_none() {
        assert_eq!(common_name(&certificate(None, Some("Pigeon tests"))), None);
        assert_eq!(common_name(b""), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
    }

    proptest! {
        #[test]
        fn truncated_or_damaged_certificates_never_panic(
            cut in 0usize..600, flip in 0usize..600, bit in 0u8..8,
        ) {
            let mut der = certificate(Some("billing"), Some("Pigeon tests"));
            if flip < der.len() {
                der[flip] ^= 1 << bit;
            }
            der.truncate(cut.min(der.len()));
            let _ = common_name(&der);
        }
    }
}
