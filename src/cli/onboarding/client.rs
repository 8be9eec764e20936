//! The client config that `peer add` and the quickstart hand out: wg-quick
//! text, and the same as a QR code for the WireGuard mobile apps.
//!
//! wg-quick runs some config lines as root, so every value is checked here
//! whatever validated it before, and a QR code (which may hold the client's
//! private key) is written owner-only and never through a symlink.

use super::atomic_write::{O_NOFOLLOW, io};
use super::{OnboardingError, Result};
use crate::config;
use ipnet::IpNet;
use std::io::Write as _;
use std::path::Path;

/// Placeholder written where the client's private key goes when promgate
/// never saw it (`--public-key`).
pub(crate) const PRIVATE_KEY_PLACEHOLDER: &str = "<CLIENT_PRIVATE_KEY>";

/// A client config in wg-quick format. `[Peer] AllowedIPs` holds only the
/// gateway's own tunnel addresses: nothing else is reachable through it, so
/// routing more would only black-hole the client's traffic.
///
/// wg-quick runs `PostUp` lines as root, so a value with a line break
/// would be code execution on the client: every string is checked here,
/// last, whatever validated it before.
pub(crate) fn client_config(
    private_key: &str,
    address: IpNet,
    gateway_public: &str,
    endpoint: &str,
    gateway_hosts: &[IpNet],
) -> Result<String> {
    config::check_endpoint(endpoint).map_err(|reason| OnboardingError::Endpoint {
        flag: "endpoint",
        reason,
    })?;
    for (what, v) in [
        ("private key", private_key),
        ("gateway public key", gateway_public),
    ] {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(OnboardingError::UnsafeClientConfig { what });
        }
    }
    let allowed: Vec<String> = gateway_hosts.iter().map(|n| n.to_string()).collect();
    Ok(format!(
        "[Interface]\nPrivateKey = {private_key}\nAddress = {address}\n\n[Peer]\nPublicKey = {gateway_public}\nEndpoint = {endpoint}\nAllowedIPs = {}\nPersistentKeepalive = 25\n",
        allowed.join(", ")
    ))
}

/// Renders a client config as a QR code for a terminal.
pub(crate) fn qr_terminal(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
    )
}

/// Writes a client config as a QR code PNG.
pub(crate) fn qr_png(text: &str, path: &Path) -> Result<()> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(OnboardingError::QrTooLarge)?;
    let image = code
        .render::<image::Luma<u8>>()
        .min_dimensions(400, 400)
        .build();
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(OnboardingError::QrEncoding)?;
    // The code may hold the client's private key: owner-only, and never
    // through a symlink someone planted at that path.
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW)
        .open(path)
        .map_err(io("writing", path))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io("setting the mode of", path))?;
    f.write_all(&png).map_err(io("writing", path))?;
    Ok(())
}
