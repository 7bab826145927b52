#!/usr/bin/env bash
# Run the three stages in order: train_cam.py, infer_cam.py, eval_cam.py.
#
#   bash run.sh                                  # CPU demo on generated data (configs/synthetic.yaml)
#   bash run.sh configs/voc.yaml --gpu 0 dataset.root_dir=/data/VOC2012
#   bash run.sh --restart                        # train again from scratch, and redo the CAMs
#
# key=value overrides go to every stage; each option goes to the stages it means something to:
#   --gpu IDS        training and inference
#   --restart        training (from scratch) and inference (--overwrite: the CAMs of the new weights)
#   --resume PATH    training
#   --overwrite      inference
#   --sweep, --type KIND, --allow-missing    evaluation
# PYTHON names the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python}

config=configs/synthetic.yaml
if [[ $# -gt 0 && ( "$1" == *.yaml || "$1" == *.yml ) ]]; then
    config=$1
    shift
fi
overrides=() train=() infer=() eval=()
gpu_given=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu) train+=(--gpu "${2:?--gpu needs GPU ids}"); infer+=(--gpu "$2"); gpu_given=true; shift 2 ;;
        --gpu=*) train+=("$1"); infer+=("$1"); gpu_given=true; shift ;;
        --restart) train+=(--restart); infer+=(--overwrite); shift ;;
        --resume) train+=(--resume "${2:?--resume needs a checkpoint}"); shift 2 ;;
        --resume=*) train+=("$1"); shift ;;
        --overwrite) infer+=(--overwrite); shift ;;
        --sweep | --allow-missing) eval+=("$1"); shift ;;
        --type) eval+=(--type "${2:?--type needs cam or png}"); shift 2 ;;
        --type=*) eval+=("$1"); shift ;;
        -*) echo "error: run.sh: unknown option $1 (it takes --gpu, --restart, --resume, --overwrite, --sweep," \
                 "--type, --allow-missing and key=value overrides)" >&2; exit 2 ;;
        *) overrides+=("$1"); shift ;;
    esac
done
# The demo runs on the CPU unless --gpu says otherwise.
if [[ "$config" == configs/synthetic* && $gpu_given == false ]]; then
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
