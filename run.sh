#!/usr/bin/env bash
# Run the three stages in order: train_cam.py, infer_cam.py, eval_cam.py.
#
#   bash run.sh                                  # CPU demo on generated data (configs/synthetic.yaml)
#   bash run.sh configs/voc.yaml --gpu 0 dataset.root_dir=/data/VOC2012
#   bash run.sh --restart                        # train again from scratch, and redo the CAMs
#
# The config file and the options may come in any order. key=value overrides go to every stage; each
# option goes to the stages it means something to:
#   --gpu IDS        training and inference
#   --restart        training (from scratch) and inference (--overwrite: the CAMs of the new weights)
#   --resume PATH    training
#   --overwrite      inference
#   --sweep, --type KIND, --allow-missing    evaluation
# PYTHON names the interpreter (default: python).
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")"
python=${PYTHON:-python}

fail() {
    echo "error: run.sh: $*" >&2
    exit 2
}
# value OPTION NEXT: NEXT as the value of OPTION, unless it is missing or another option.
value() {
    [[ $# -ge 2 && -n "$2" && "$2" != -* ]] || fail "$1 needs a value"
    printf '%s' "$2"
}

config=configs/synthetic.yaml config_given=false
overrides=() train=() infer=() eval=()
gpu_given=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu) gpu=$(value "$@"); train+=(--gpu "$gpu"); infer+=(--gpu "$gpu"); gpu_given=true; shift 2 ;;
        --gpu=*) train+=("$1"); infer+=("$1"); gpu_given=true; shift ;;
        --restart) train+=(--restart); infer+=(--overwrite); shift ;;
        --resume) train+=(--resume "$(value "$@")"); shift 2 ;;
        --resume=*) train+=("$1"); shift ;;
        --overwrite) infer+=(--overwrite); shift ;;
        --sweep | --allow-missing) eval+=("$1"); shift ;;
        --type) eval+=(--type "$(value "$@")"); shift 2 ;;
        --type=*) eval+=("$1"); shift ;;
        -*) fail "unknown option $1 (it takes a config file, --gpu, --restart, --resume, --overwrite, --sweep," \
                 "--type, --allow-missing and key=value overrides)" ;;
        *=*) overrides+=("$1"); shift ;;
        *.yaml | *.yml)
            [[ $config_given == false ]] || fail "two config files, $config and $1; give one"
            config=$1 config_given=true; shift
            # a path from where run.sh was called, if it is one (the stages run from the repository)
            [[ "$config" == /* || "$caller" == "$PWD" || ! -f "$caller/$config" ]] || config=$caller/$config ;;
        *) fail "$1 is neither a config file (.yaml) nor a key=value override" ;;
    esac
done
[[ -f "$config" ]] || fail "config file $config does not exist (configs/ holds $(cd configs && echo *.yaml))"
# The demo runs on the CPU unless --gpu says otherwise.
if [[ "$(basename "$config")" == synthetic* && $gpu_given == false ]]; then
    train+=(--gpu cpu)
    infer+=(--gpu cpu)
fi

run_stage() {
    local script=$1
    shift
    echo "== $python $script --config $config $*"
    "$python" "$script" --config "$config" "$@"
}
run_stage train_cam.py "${train[@]+"${train[@]}"}" "${overrides[@]+"${overrides[@]}"}"
run_stage infer_cam.py "${infer[@]+"${infer[@]}"}" "${overrides[@]+"${overrides[@]}"}"
run_stage eval_cam.py "${eval[@]+"${eval[@]}"}" "${overrides[@]+"${overrides[@]}"}"
