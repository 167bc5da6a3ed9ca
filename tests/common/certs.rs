//! Certificates for TLS tests, made with rcgen: a CA, and leaves it signs.

#![allow(dead_code)]

/// A self-signed CA named `name`: its PEM and what signs with it.
pub fn authority(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

/// A certificate for `names`, for servers and clients, signed by `issuer`,
/// with a common name and an organizational unit when given: its PEM and
/// its key's PEM.
pub fn leaf(
    names: &[&str],
    common_name: Option<&str>,
    unit: Option<&str>,
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    if let Some(name) = common_name {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
    }
    if let Some(unit) = unit {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, unit);
    }
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}
