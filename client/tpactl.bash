# bash completion for tpactl, the command-line client of tpad.
_tpactl() {
	local cur prev words cword
	_init_completion 2>/dev/null || {
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD-1]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	}
	local commands="activate lookup status import export devices device adopt retire print metrics backup top keygen-rsa store as help"
	local global="--socket --json --help --version"
	local label="--format --output -o --scale --margin --ec-level --invert --label --code --print --printer --copies"

	case $prev in
	--socket)
		COMPREPLY=($(compgen -f -- "$cur"))
		return ;;
	--state)
		COMPREPLY=($(compgen -W "PENDING ISSUED FAILED FOREIGN RETIRED" -- "$cur"))
		return ;;
	--ec-level)
		COMPREPLY=($(compgen -W "L M Q H" -- "$cur"))
		return ;;
	--out)
		# export's is a directory; as keygen's the private key's file.
		if [[ " ${words[*]} " == *" as "* ]]; then
			COMPREPLY=($(compgen -f -- "$cur"))
		else
			COMPREPLY=($(compgen -d -- "$cur"))
		fi
		return ;;
	-o|--output|--failures|--config|--tpad|--manifest|--signer|--dev-eui-map)
		COMPREPLY=($(compgen -f -- "$cur"))
		return ;;
	--dev-eui|--join-eui|--tkm-info|--app-key|--serial|--profile-id|--scale|--margin|\
	--concurrency|--limit|--interval|--printer|--copies|--to|--after|--reason|--bits|\
	--label|--customer-id|--port|--payload)
		return ;; # a value of its own: no option names offered for it
	esac

	local cmd= i
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		--socket|--dev-eui|--join-eui|--tkm-info|--app-key|--serial|--profile-id|--format|\
		--scale|--margin|--ec-level|--concurrency|--failures|--out|--state|--limit|-o|--output|\
		--printer|--copies|--interval|--to|--config|--tpad|--after|--reason|--bits|--manifest|\
		--signer|--dev-eui-map)
			((i++)) ;;
		-*) ;;
		*) cmd=${words[i]}; break ;;
		esac
	done

	if [[ $prev == --format ]]; then
		case $cmd in
		export) COMPREPLY=($(compgen -W "png svg zpl pdf csv" -- "$cur")) ;;
		metrics) COMPREPLY=($(compgen -W "openmetrics prometheus" -- "$cur")) ;;
		*) COMPREPLY=($(compgen -W "png svg zpl pdf text none" -- "$cur")) ;;
		esac
		return
	fi

	local opts
	if [[ $cmd == as ]]; then
		# tpas's commands: the word after "as", then its options.
		local sub=${words[i+1]}
		if ((cword == i + 1)); then
			COMPREPLY=($(compgen -W "keygen import-astk astks uplinks send status" -- "$cur"))
			return
		fi
		case $sub in
		keygen) opts="--out" ;;
		import-astk) opts="--label --customer-id --dev-eui" ;;
		uplinks) opts="--after --follow" ;;
		send) opts="--dev-eui --port --payload --confirmed" ;;
		esac
		COMPREPLY=($(compgen -W "$opts $global" -- "$cur"))
		return
	fi
	case $cmd in
	'') COMPREPLY=($(compgen -W "$commands $global" -- "$cur")); return ;;
	help) COMPREPLY=($(compgen -W "$commands" -- "$cur")); return ;;
	activate) opts="--dev-eui --join-eui --tkm-info --app-key --generate-app-key --serial --profile-id $label" ;;
	lookup) opts="--dev-eui $label" ;;
	import)
		opts="--generate-appkeys --concurrency --failures --ignore-unknown-columns --manifest --signer --dev-eui-map"
		if [[ $cur != -* ]]; then
			COMPREPLY=($(compgen -f -X '!*.@(csv|CSV|txt)' -- "$cur") $(compgen -d -- "$cur"))
			return
		fi ;;
	export) opts="--format --out --state --code --label --scale --margin --ec-level" ;;
	devices) opts="--state --limit" ;;
	adopt|device) opts="" ;;
	metrics) opts="--format" ;;
	top) opts="--interval" ;;
	print) opts="--state --after --limit --printer --copies" ;;
	retire) opts="--reason" ;;
	keygen-rsa) opts="--bits" ;;
	store)
		case ${words[i+1]} in
		copy) opts="--to --config --tpad" ;;
		restore)
			opts="--config --tpad"
			if [[ $cur != -* ]]; then
				COMPREPLY=($(compgen -f -- "$cur"))
				return
			fi ;;
		*)
			COMPREPLY=($(compgen -W "copy restore" -- "$cur"))
			return ;;
		esac ;;
	backup)
		if [[ $cur != -* ]]; then
			COMPREPLY=($(compgen -f -- "$cur"))
			return
		fi ;;
	esac
	COMPREPLY=($(compgen -W "$opts $global" -- "$cur"))
}
complete -F _tpactl tpactl
