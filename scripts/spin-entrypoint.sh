#!/bin/sh
# The image's entrypoint: `spin "$@"`, except that a --runtime-config-file holding
# ${XGW_REDIS_...} placeholders (runtime-config.redis.toml) is first rendered by
# render-runtime-config.sh into a private file under $TMPDIR (default /tmp), and
# Spin is given that file. Any other runtime config reaches Spin untouched.
# Spin replaces this shell (exec), so it still gets the container's signals.
set -eu

here=$(dirname "$0")

render() {
    if grep -q '\${XGW_' "$1"; then
        # A restarted container keeps /tmp: drop the copies of earlier starts.
        find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'ximilar-gw.*' -user "$(id -u)" -exec rm -rf {} + 2>/dev/null || true
        dir=$(mktemp -d "${TMPDIR:-/tmp}/ximilar-gw.XXXXXX")
        sh "$here/render-runtime-config.sh" "$1" "$dir/$(basename "$1")" || { rmdir "$dir"; exit 1; }
        echo "$dir/$(basename "$1")"
    else
        echo "$1"
    fi
}

# Rebuild the arguments, swapping the runtime config file for its rendered copy.
config_next=
for arg do
    shift
    if [ -n "$config_next" ]; then
        arg=$(render "$arg")
        config_next=
    else
        case $arg in
            --runtime-config-file) config_next=1 ;;
            --runtime-config-file=*) arg=--runtime-config-file=$(render "${arg#*=}") ;;
        esac
    fi
    set -- "$@" "$arg"
done

exec spin "$@"
