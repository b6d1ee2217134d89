# Sourced by the recipes: turns "--some-name value" arguments into the shell variable some_name=value,
# so every setting a recipe declares at its top can be overridden on the command line.
while [ $# -gt 0 ]; do
  case "$1" in
    --*) name=${1#--}; name=${name//-/_}
         [ $# -ge 2 ] || { echo "missing value for $1" >&2; exit 2; }
         printf -v "$name" '%s' "$2"; shift 2 ;;
    *) echo "unknown argument $1 (settings are given as --name value)" >&2; exit 2 ;;
  esac
done
