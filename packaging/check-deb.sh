#!/usr/bin/env bash
# Builds the .deb (`cargo deb`), checks its file list against packaging/debian/file-list.txt,
# unpacks it into a throwaway root and runs what it installed from there: `hexidian --version`
# (the commit of this checkout), `check-config --offline` on the installed example config with
# the secrets where the unit puts them, and `hexidian omm users` through the OpenSSL backend
# against the OMM simulator's static-RSA listener (and the clear error without it). Where
# systemd-analyze exists: `verify` of the unit (any complaint fails) and its `security` score.
# Called by .ci/run; needs cargo-deb, dpkg-deb and libssl-dev.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "-- cargo deb -p hexidian"
deb=$(cargo deb -p hexidian --locked --quiet | tail -1)
[ -f "$deb" ] || { echo "cargo deb printed no package path: $deb" >&2; exit 1; }
echo "$deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'

echo "-- its file list against packaging/debian/file-list.txt"
dpkg-deb --contents "$deb" | awk '{print $1, $6}' | sed 's|\./|/|' | sort -k2 >"$work/files"
if ! diff -u packaging/debian/file-list.txt "$work/files"; then
  echo "the package's files changed: update packaging/debian/file-list.txt if that is intended" >&2
  exit 1
fi
dpkg-deb --field "$deb" Depends | grep -q 'libssl3' \
  || { echo "the package does not depend on libssl3: built without the openssl feature?" >&2; exit 1; }
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = "/etc/hexidian/hexidian.toml
/etc/hexidian/hexidian.env" ] || { echo "conffiles are not the config and the env file" >&2; exit 1; }

echo "-- installed into a throwaway root (dpkg -x)"
root="$work/root"
dpkg -x "$deb" "$root"
bin="$root/usr/bin/hexidian"
version=$("$bin" --version)
echo "$version"
want="hexidian $(cargo metadata --no-deps --format-version 1 --locked \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "hexidian"))')"
if head=$(git rev-parse --short=12 HEAD 2>/dev/null); then want="$want (commit $head)"; fi
case "$version" in
  "$want"*) ;;
  *) echo "--version says \"$version\", expected \"$want\"" >&2; exit 1 ;;
esac

echo "-- check-config --offline on the installed example config"
creds="$work/credentials"
mkdir -p "$creds"
printf 'omm' >"$creds/omm-password"
HEXIDIAN_GURU3_KEY='7$packagingcheck' HEXIDIAN_WEBHOOK_KEY=packaging-check CREDENTIALS_DIRECTORY="$creds" \
  "$bin" check-config --offline --config "$root/etc/hexidian/hexidian.toml"

echo "-- the installed binary reaches a static-RSA-only OMM through OpenSSL"
cargo build -p omm-axi-sim --features openssl --locked --quiet
target=$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
"$target/debug/omm-axi-sim" --env-file "$work/omm.env" >"$work/omm.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/omm.env" ] && break; sleep 0.1; done
[ -s "$work/omm.env" ] || { cat "$work/omm.log"; exit 1; }
# shellcheck disable=SC1091
. "$work/omm.env"
omm_config() { # $1: extra [omm] line
  sed -e "s|^host = \"10.0.0.2\"|host = \"$OMM_AXI_SIM_HOST\"|" \
    -e "s|^# port = 12622|port = $OMM_AXI_SIM_STATIC_RSA_PORT|" \
    -e "s|^user = \"hexidian\"|user = \"$OMM_AXI_SIM_USER\"\n$1|" \
    -e "s|^fingerprints = .*|fingerprints = [\"$OMM_AXI_SIM_STATIC_RSA_FINGERPRINT\"]|" \
    "$root/etc/hexidian/hexidian.toml"
}
omm_config 'tls_backend = "openssl"' >"$work/openssl.toml"
omm_config '' >"$work/rustls.toml"
grep -qx "port = $OMM_AXI_SIM_STATIC_RSA_PORT" "$work/openssl.toml" \
  && grep -qx 'tls_backend = "openssl"' "$work/openssl.toml" \
  || { echo "the installed example config changed shape" >&2; exit 1; }
CREDENTIALS_DIRECTORY="$creds" "$bin" omm users --config "$work/openssl.toml" | tee "$work/users"
grep -q '^NUMBER' "$work/users"
if CREDENTIALS_DIRECTORY="$creds" "$bin" omm users --config "$work/rustls.toml" >"$work/rustls.out" 2>&1; then
  echo "the rustls backend reached the static-RSA listener" >&2
  exit 1
fi
grep -q 'static-RSA' "$work/rustls.out" && grep -q 'tls_backend' "$work/rustls.out" \
  || { cat "$work/rustls.out"; echo "no clear error from the rustls backend" >&2; exit 1; }
sed 's/^/  rustls: /' "$work/rustls.out"

if command -v systemd-analyze >/dev/null 2>&1; then
  echo "-- systemd-analyze verify (the unit against the installed root)"
  unit=/usr/lib/systemd/system/hexidian.service
  # the root needs the units the service refers to (sysinit.target …): the host's
  for d in /usr/lib/systemd/system /lib/systemd/system; do
    [ -d "$d" ] && cp -an "$d/." "$root/usr/lib/systemd/system/" 2>/dev/null || true
  done
  if ! systemd-analyze verify --root="$root" "$unit" >"$work/verify" 2>&1 || [ -s "$work/verify" ]; then
    cat "$work/verify"
    echo "systemd-analyze verify complained about the unit" >&2
    exit 1
  fi
  echo "ok"
  echo "-- systemd-analyze security --offline=yes"
  systemd-analyze security --offline=yes --root="$root" "$unit" 2>&1 | tail -1
else
  echo "no systemd-analyze here: the unit is not verified" >&2
fi
echo "packaging: ok"
