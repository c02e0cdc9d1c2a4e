#!/bin/sh
# render-runtime-config.sh TEMPLATE OUTPUT
#
# Copies a Spin runtime config to OUTPUT (mode 0600) with every ${XGW_REDIS_<NAME>}
# placeholder replaced by that environment variable, percent-encoded, so that a
# password of any characters fits the user-info part of a redis:// URL. Needed
# because Spin takes the values of a runtime config file as written: it looks
# nothing up in the environment.
#
# Only XGW_REDIS_* names are filled in, so a template cannot pull other secrets
# (the Ximilar token) into the file. An unset or empty variable is an error.
# Keep OUTPUT out of the repository and off shared volumes: it holds the password.
# Spin resolves a key-value store's `path` and client_tls files against the
# directory of the file it is given, so a template should not use relative ones.
set -eu

die() {
    echo "render-runtime-config: $*" >&2
    exit 1
}

[ "$#" -eq 2 ] || die "usage: render-runtime-config.sh TEMPLATE OUTPUT"
template=$1
output=$2
[ -r "$template" ] || die "cannot read $template"

# Every byte as %XX: always valid in a URL's user info, whatever the password.
percent_encode() {
    printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n' | sed 's/../%&/g'
}

umask 077
work=$(mktemp "$output.XXXXXX")
trap 'rm -f "$work" "$work.next"' EXIT
cp "$template" "$work"

# The names are checked by the pattern, so the eval below only reads a variable.
for name in $(grep -o '\${XGW_REDIS_[A-Z0-9_]*}' "$template" | sort -u | sed 's/^\${\(.*\)}$/\1/'); do
    eval "value=\${$name-}"
    [ -n "$value" ] || die "$name is not set (or empty); $template needs it"
    encoded=$(percent_encode "$value")
    sed "s/\\\${$name}/$encoded/g" "$work" > "$work.next"
    mv "$work.next" "$work"
done

# A misspelt placeholder would otherwise reach Spin as a literal password.
if grep -q '\${' "$work"; then
    die "$template has a placeholder other than \${XGW_REDIS_<NAME>}: $(grep -o '\${[^}]*}' "$work" | head -n 1)"
fi

mv "$work" "$output"
trap - EXIT
