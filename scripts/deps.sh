# deps.sh: install the Debian packages tpad needs to build, test and demo (only what is missing).
# Sourced by scripts/test and scripts/demo.
tpad_install_deps() {
	local pkgs=(meson ninja-build pkg-config gcc clang libclang-rt-14-dev python3
		libevent-dev libmbedtls-dev libjansson-dev libqrencode-dev libsystemd-dev
		libsqlite3-dev libpng-dev systemd util-linux zbar-tools qrencode stunnel4 socat
		curl openssl python3-prometheus-client prometheus tmux groff-base man-db sqlite3 spin libxml2-dev nettle-dev
		python3-cryptography
		libcairo2-dev libfontconfig-dev libcups2-dev fonts-dejavu-core cups-ipp-utils
		poppler-utils dbus-daemon postgresql libpq-dev "$@")
	# The print tests render ZPL with a renderer from the npm registry; a Node.js that
	# ships its own npm (NodeSource) must not be replaced by Debian's.
	command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
	local missing=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "Installing missing packages: ${missing[*]}"
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
