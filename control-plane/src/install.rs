//! The one-line install: the script the control plane serves at `/install.sh` (the
//! repository's `install.sh` with this control plane's URL and the daemon's systemd unit
//! filled in) and the command `zpanel tokens create` prints, which fetches that script, checks
//! it against its sha256 and runs it. The check is what makes the fetch safe: a fresh host does
//! not trust the control plane's internal CA yet, so the script is fetched without a
//! certificate check (`curl -k`) and only its checksum, which came with the token over an
//! authenticated channel, vouches for it.

use sha2::{Digest, Sha256};

/// The repository's `install.sh`, as written.
const TEMPLATE: &str = include_str!("../../install.sh");
/// The daemon's unit, embedded in the served script.
pub const BRIDGE_UNIT: &str = include_str!("../../systemd/zpanel-bridge.service");

/// The script as served, and its sha256.
#[derive(Debug, PartialEq, Eq)]
pub struct InstallScript {
    pub text: String,
    /// Lower-case hex.
    pub sha256: String,
}

impl InstallScript {
    /// The script for a control plane reached at `public_url` (rendered once, at start, into
    /// `AppState::install_script`). Fills the empty `ZPANEL_URL=` and `ZPANEL_BRIDGE_UNIT=` lines of the template.
    pub fn render(public_url: &str) -> InstallScript {
        let text = fill(TEMPLATE, "ZPANEL_URL", public_url.trim_end_matches('/'));
        let text = fill(&text, "ZPANEL_BRIDGE_UNIT", BRIDGE_UNIT.trim_end());
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        InstallScript { text, sha256 }
    }
}

/// Replaces the line `NAME=` with `NAME='value'` (quoted for sh).
fn fill(template: &str, name: &str, value: &str) -> String {
    let empty = format!("\n{name}=\n");
    assert!(
        template.contains(&empty),
        "install.sh has no `{name}=` line to fill"
    );
    template.replacen(&empty, &format!("\n{name}={}\n", sh_quote(value)), 1)
}

/// `value` as one single-quoted sh word.
pub fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The command a user pastes into a shell (sh or bash) on the new host: downloads the script
/// to a temporary file, checks its sha256, runs it as root with the token and the CA pin, and
/// removes the file. A script that does not match runs nothing and says so in one line.
pub fn install_command(public_url: &str, script_sha256: &str, token: &str, ca_pin: &str) -> String {
    let url = format!("{}/install.sh", public_url.trim_end_matches('/'));
    format!(
        "f=$(mktemp) && curl -fsSLk -o \"$f\" {url} && {{ echo \"{script_sha256}  $f\" | sha256sum -c --status || {{ echo 'zpanel install: the downloaded install.sh does not match the sha256 in this command; nothing was run' >&2; false; }}; }} && sudo sh \"$f\" --token {token} --ca-pin {ca_pin}; rm -f \"$f\"",
        url = sh_quote(&url),
        token = sh_quote(token),
        ca_pin = sh_quote(ca_pin),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_the_url_and_the_unit() {
        let script = InstallScript::render("https://panel.example.com:8443/");
        assert!(
            script
                .text
                .contains("\nZPANEL_URL='https://panel.example.com:8443'\n")
        );
        assert!(
            script
                .text
                .contains("ExecStart=/usr/local/bin/zpanel-bridge run")
        );
        assert_eq!(
            script.sha256,
            hex::encode(Sha256::digest(script.text.as_bytes()))
        );
    }

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        let command = install_command("https://p:8443", "ab", "zpj_x", "sha256:cd");
        assert!(
            command.starts_with(
                "f=$(mktemp) && curl -fsSLk -o \"$f\" 'https://p:8443/install.sh' && "
            )
        );
        assert!(command.ends_with("--token 'zpj_x' --ca-pin 'sha256:cd'; rm -f \"$f\""));
    }
}
