# Sourced by the recipes: turns "--some-name value" arguments into the shell variable some_name=value,
# so every setting a recipe declares at its top can be overridden on the command line. An option the
# recipe does not declare (a typo) or a missing value is an error, not a silently unused variable.
while [ $# -gt 0 ]; do
  case "$1" in
    --*) name=${1#--}; name=${name//-/_}
         [[ $name =~ ^[a-z][a-z0-9_]*$ && -n ${!name+x} ]] \
           || { echo "unknown option $1 (the settings are the variables at the top of $0)" >&2; exit 2; }
         [[ $# -ge 2 && $2 != --* ]] || { echo "missing value for $1" >&2; exit 2; }
         printf -v "$name" '%s' "$2"; shift 2 ;;
    *) echo "unknown argument $1 (settings are given as --name value)" >&2; exit 2 ;;
  esac
done
