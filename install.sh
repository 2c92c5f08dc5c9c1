#!/bin/sh
# Installs the Zpanel bridge daemon (zpanel-bridge) on this host and enrols the host with a
# control plane. The control plane serves this script at https://PANEL/install.sh with its own
# URL and the systemd unit filled in; `zpanel tokens create` prints the command that fetches
# it, checks its sha256 and runs it:
#
#   sudo sh install.sh --token TOKEN --ca-pin sha256:HEX
#
# What it does, stopping at the first failed check with one line saying what to do and
# leaving nothing half-installed (everything is downloaded and enrolled in a temporary
# directory first, and moved into place only when all checks passed):
#   1. checks: root, a supported architecture (x86_64, aarch64), systemd as init;
#   2. fetches the control plane's CA certificate and checks it against --ca-pin;
#   3. fetches zpanel-bridge for this architecture over TLS trusting only that CA (or the
#      system's trust store when the panel has a public certificate) and checks its sha256;
#   4. enrols the host (`zpanel-bridge join`, which checks the pin again);
#   5. installs /usr/local/bin/zpanel-bridge, /etc/zpanel and
#      /etc/systemd/system/zpanel-bridge.service, enables and (re)starts the service.
# Run again with a new token, it enrols the host again (keeping the hand-written tables of
# /etc/zpanel/bridge.toml) and restarts the service. `--uninstall` removes all of it.
set -eu

# The control plane's URL: filled in when the control plane serves this script.
ZPANEL_URL=
# The systemd unit (systemd/zpanel-bridge.service): filled in likewise.
ZPANEL_BRIDGE_UNIT=

BIN=/usr/local/bin/zpanel-bridge
CONFIG_DIR=/etc/zpanel
UNIT_NAME=zpanel-bridge.service
UNIT_FILE=/etc/systemd/system/$UNIT_NAME
SUPPORTED_ARCHES="x86_64 aarch64"

die() {
    printf 'zpanel install: %s\n' "$*" >&2
    exit 1
}

say() {
    printf '%s\n' "$*"
}

usage() {
    cat <<EOF
Usage: sudo sh install.sh --token TOKEN --ca-pin sha256:HEX [--name NAME] [--label KEY=VALUE]...
       sudo sh install.sh --uninstall

Installs zpanel-bridge, enrols this host with the Zpanel control plane and starts it under
systemd. The command printed by \`zpanel tokens create\` runs this for you.

  --token TOKEN        join token from \`zpanel tokens create\`
  --ca-pin PIN         the control plane's CA pin (sha256:<hex>), printed with the token
  --name NAME          this host's name in the panel (default: its hostname)
  --label KEY=VALUE    a label to select the host by (repeatable)
  --server URL         the control plane's URL (default: ${ZPANEL_URL:-none; required})
  --uninstall          stop and remove zpanel-bridge, its unit and /etc/zpanel
  --help               this text
EOF
}

# === arguments ===

token=""
pin=""
name=""
labels=""
uninstall=""
server=$ZPANEL_URL
while [ $# -gt 0 ]; do
    case $1 in
    --help | -h)
        usage
        exit 0
        ;;
    --uninstall) uninstall=1 ;;
    --token | --ca-pin | --name | --label | --server)
        [ $# -ge 2 ] || die "$1 needs a value (see --help)"
        case $1 in
        --token) token=$2 ;;
        --ca-pin) pin=$2 ;;
        --name) name=$2 ;;
        --server) server=$2 ;;
        --label)
            case $2 in
            *=*) ;;
            *) die "--label takes KEY=VALUE, not '$2'" ;;
            esac
            labels="$labels$2
"
            ;;
        esac
        shift
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

# === checks that need nothing from the network ===

[ "$(id -u)" = 0 ] || die "run me as root (sudo sh $0 ...)"

if [ -z "$uninstall" ]; then
    arch=$(uname -m)
    case " $SUPPORTED_ARCHES " in
    *" $arch "*) ;;
    *) die "this host is $arch; zpanel-bridge runs on x86_64 and aarch64 only" ;;
    esac
fi

[ -d /run/systemd/system ] ||
    die "systemd is not running as init here (no /run/systemd/system); zpanel-bridge needs a systemd host"

for tool in systemctl sha256sum base64 mktemp; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing; install it and run me again"
done

# === uninstall ===

if [ -n "$uninstall" ]; then
    if [ -e "$UNIT_FILE" ] || systemctl cat "$UNIT_NAME" >/dev/null 2>&1; then
        systemctl disable --now "$UNIT_NAME" >/dev/null 2>&1 || true
    fi
    rm -f "$UNIT_FILE"
    systemctl daemon-reload
    systemctl reset-failed "$UNIT_NAME" >/dev/null 2>&1 || true
    # The binary, and what an interrupted upgrade may have left beside it.
    rm -f "$BIN" "$BIN".*
    rm -rf "$CONFIG_DIR"
    say "removed zpanel-bridge: the service, $UNIT_FILE, $BIN and $CONFIG_DIR"
    say "the host is still listed in the panel until you remove it there (zpanel hosts rm NAME)"
    exit 0
fi

[ -n "$token" ] || die "no join token: pass --token (make one with: zpanel tokens create)"
[ -n "$pin" ] || die "no CA pin: pass --ca-pin sha256:HEX (printed with the join token)"
pin=$(printf '%s' "$pin" | tr 'A-F' 'a-f')
case $pin in
sha256:*) hex=${pin#sha256:} ;;
*) die "--ca-pin must look like sha256:<64 hex digits>" ;;
esac
case $hex in
*[!0-9a-f]*) die "--ca-pin must look like sha256:<64 hex digits>" ;;
esac
[ ${#hex} -eq 64 ] || die "--ca-pin must look like sha256:<64 hex digits>"
[ -n "$server" ] || die "no control plane URL: pass --server https://PANEL (or use the script the panel serves at /install.sh)"
server=${server%/}
command -v curl >/dev/null 2>&1 || die "curl is missing; install it (apt-get install curl) and run me again"

unit=$ZPANEL_BRIDGE_UNIT
if [ -z "$unit" ] && [ -f "$(dirname "$0")/systemd/$UNIT_NAME" ]; then
    # Run from a checkout of the repository rather than served by a control plane.
    unit=$(cat "$(dirname "$0")/systemd/$UNIT_NAME")
fi
case $unit in
*"[Service]"*) ;;
*) die "this script has no systemd unit in it; fetch it from the control plane ($server/install.sh)" ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# === the control plane's CA, checked against the pin ===

# fetch URL OUT [CURL OPTIONS]: downloads URL to OUT. Sets fetch_code to the HTTP status
# and fetch_error to curl's own complaint when it failed before that.
fetch() {
    fetch_url=$1
    fetch_out=$2
    shift 2
    fetch_error=""
    fetch_code=$(curl -sS -L --proto '=https,http' --connect-timeout 15 --retry 2 \
        -o "$fetch_out" -w '%{http_code}' "$@" "$fetch_url" 2>"$tmp/curl.err") || {
        fetch_status=$?
        fetch_error=$(tail -n 1 "$tmp/curl.err")
        return "$fetch_status"
    }
    [ "$fetch_code" = 200 ]
}

# The CA's certificate is fetched without checking the server's: the pin checks it instead.
fetch "$server/api/v1/ca.pem" "$tmp/ca-bundle.pem" -k || {
    [ -n "$fetch_error" ] && die "cannot reach the control plane at $server ($fetch_error); check the URL and this host's network"
    die "$server answered HTTP $fetch_code for its CA certificate; is it a Zpanel control plane?"
}
# Each certificate of the PEM: its base64 body decoded to DER and hashed. Only the one that
# matches the pin is trusted from here on.
n=0
inside=""
cr=$(printf '\r')
while IFS= read -r line || [ -n "$line" ]; do
    line=${line%"$cr"}
    case $line in
    "-----BEGIN CERTIFICATE-----")
        n=$((n + 1))
        inside=1
        : >"$tmp/cert.$n.b64"
        ;;
    "-----END CERTIFICATE-----")
        inside=""
        sum=$(base64 -d <"$tmp/cert.$n.b64" 2>/dev/null | sha256sum) || continue
        if [ "sha256:${sum%% *}" = "$pin" ]; then
            {
                echo "-----BEGIN CERTIFICATE-----"
                cat "$tmp/cert.$n.b64"
                echo "-----END CERTIFICATE-----"
            } >"$tmp/ca.pem"
        fi
        ;;
    *) [ -z "$inside" ] || printf '%s\n' "$line" >>"$tmp/cert.$n.b64" ;;
    esac
done <"$tmp/ca-bundle.pem"
[ "$n" -gt 0 ] || die "$server did not answer with a CA certificate; is it a Zpanel control plane?"
[ -f "$tmp/ca.pem" ] ||
    die "the control plane's CA does not match --ca-pin $pin: nothing installed (check the pin with the panel's admin: zpanel-cp ca-pin)"
say "checked the control plane's CA against $pin"

# === the daemon binary, checked against its sha256 ===

# download PATH OUT: from the control plane, trusting its CA, else (a public certificate in
# front of the panel) the system's trust store.
download() {
    if fetch "$server$1" "$2" --cacert "$tmp/ca.pem"; then
        return 0
    fi
    if [ -n "$fetch_error" ]; then
        fetch "$server$1" "$2" && return 0
    fi
    [ -n "$fetch_error" ] && die "cannot download $server$1 ($fetch_error); check this host's network and the panel's certificate"
    [ "$fetch_code" = 404 ] && die "the control plane has no zpanel-bridge for $arch ($server$1 not found); put zpanel-bridge-linux-$arch in its --downloads-dir"
    die "the control plane answered HTTP $fetch_code for $server$1; see its log"
}
file=zpanel-bridge-linux-$arch
download "/downloads/$file.sha256" "$tmp/bridge.sha256"
download "/downloads/$file" "$tmp/zpanel-bridge"
read -r expected _ <"$tmp/bridge.sha256" || true
case $expected in
*[!0-9a-f]* | "") die "the control plane's $file.sha256 is not a sha256; see its log" ;;
esac
[ ${#expected} -eq 64 ] || die "the control plane's $file.sha256 is not a sha256; see its log"
echo "$expected  $tmp/zpanel-bridge" | sha256sum -c --status ||
    die "the downloaded zpanel-bridge does not match its sha256 ($expected): nothing installed; try again, and if it persists check the panel's --downloads-dir"
chmod 0755 "$tmp/zpanel-bridge"
version=$("$tmp/zpanel-bridge" --version 2>/dev/null) ||
    die "the downloaded zpanel-bridge does not run on this host: nothing installed"
say "downloaded $version for $arch (sha256 $expected)"

# === enrolment, into a copy of the configuration ===

mkdir -m 0700 "$tmp/config"
if [ -d "$CONFIG_DIR" ]; then
    # Enrolled before: join keeps the hand-written tables of bridge.toml.
    cp -a "$CONFIG_DIR/." "$tmp/config/"
fi
set -- join --server "$server" --token-file - --ca-pin "$pin" --config-dir "$tmp/config"
[ -z "$name" ] || set -- "$@" --name "$name"
while IFS= read -r label; do
    [ -z "$label" ] || set -- "$@" --label "$label"
done <<EOF
$labels
EOF
if ! printf '%s\n' "$token" | "$tmp/zpanel-bridge" "$@" >"$tmp/join.out" 2>"$tmp/join.err"; then
    reason=$(grep -v '^[[:space:]]*$' "$tmp/join.err" | tail -n 1)
    reason=${reason#zpanel-bridge: }
    die "${reason:-zpanel-bridge join failed} (nothing changed on this host)"
fi
enrolled=$(head -n 1 "$tmp/join.out")
enrolled=${enrolled%%;*}

# === into place ===

if systemctl is-active --quiet "$UNIT_NAME" 2>/dev/null; then
    systemctl stop "$UNIT_NAME"
fi
install -m 0755 "$tmp/zpanel-bridge" "$BIN.install-$$"
mv -f "$BIN.install-$$" "$BIN"
rm -rf "$CONFIG_DIR.install-$$" "$CONFIG_DIR.old-$$"
mv "$tmp/config" "$CONFIG_DIR.install-$$"
if [ -d "$CONFIG_DIR" ]; then
    mv "$CONFIG_DIR" "$CONFIG_DIR.old-$$"
fi
mv "$CONFIG_DIR.install-$$" "$CONFIG_DIR"
rm -rf "$CONFIG_DIR.old-$$"
printf '%s\n' "$unit" >"$UNIT_FILE.install-$$"
chmod 0644 "$UNIT_FILE.install-$$"
mv -f "$UNIT_FILE.install-$$" "$UNIT_FILE"
systemctl daemon-reload
systemctl enable --quiet "$UNIT_NAME"
systemctl restart "$UNIT_NAME" ||
    die "zpanel-bridge was installed but did not start; see: journalctl -u zpanel-bridge"

say "$enrolled"
say "installed $BIN, $CONFIG_DIR and $UNIT_FILE (enabled at boot)"
state=""
i=0
while [ $i -lt 10 ]; do
    state=$(systemctl is-active "$UNIT_NAME" 2>/dev/null) || true
    [ "$state" = active ] && break
    i=$((i + 1))
    sleep 1
done
[ "$state" = active ] ||
    die "zpanel-bridge is installed but $state, not active; see: journalctl -u zpanel-bridge"
say "zpanel-bridge is running"
say "  status: systemctl status zpanel-bridge"
say "  logs:   journalctl -u zpanel-bridge"
say "  remove: sudo sh install.sh --uninstall (this script, from $server/install.sh)"
