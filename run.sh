#!/usr/bin/env bash
# The pipeline, stage by stage: the CAM network, its CAMs and their score, IRNet's refinement (IR labels,
# the relation network, the random walk) and the score of the pseudo masks, then the segmentation network
# (DeepLab-v2) trained on the pseudo masks and its val score without and with the CRF.
#
#   bash run.sh                                  # CPU demo on generated data (configs/synthetic.yaml)
#   bash run.sh configs/voc.yaml --gpu 0 dataset.root_dir=/data/VOC2012
#   bash run.sh --to eval_cam                    # the CAM stages only
#   bash run.sh --from train_irn                 # the stages from the relation network on
#   bash run.sh --from train_seg                 # the segmentation network only
#   bash run.sh --restart                        # every stage again, from scratch
#
# Stages, in order: train_cam infer_cam eval_cam ir_labels train_irn infer_irn eval_masks train_seg
# infer_seg eval_seg (ir_labels first makes the CAMs of ir_labels.split, train_seg the pseudo masks of
# seg.train.split: train_aug on VOC; images done are skipped).
# The config file and the options may come in any order. key=value overrides go to every stage; each
# option goes to the stages it means something to:
#   --gpu IDS          the stages that run a network (train_cam, infer_cam, train_irn, infer_irn, train_seg,
#                      infer_seg)
#   --restart          training from scratch, the other stages' --overwrite: every result is redone
#   --resume PATH      train_cam
#   --overwrite        the stages that write a file per image (infer_cam, ir_labels, infer_irn, infer_seg)
#   --sweep, --type KIND, --allow-missing    eval_cam
#   --from STAGE, --to STAGE                 run a range of the stages
# PYTHON names the interpreter (default: python).
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")"
python=${PYTHON:-python}
STAGES=(train_cam infer_cam eval_cam ir_labels train_irn infer_irn eval_masks train_seg infer_seg eval_seg)

fail() {
    echo "error: run.sh: $*" >&2
    exit 2
}
# value OPTION NEXT: NEXT as the value of OPTION, unless it is missing or another option.
value() {
    [[ $# -ge 2 && -n "$2" && "$2" != -* ]] || fail "$1 needs a value"
    printf '%s' "$2"
}
stage_index() {
    local index
    for index in "${!STAGES[@]}"; do
        [[ "${STAGES[$index]}" == "$1" ]] && { echo "$index"; return; }
    done
    fail "unknown stage $1 (the stages: ${STAGES[*]})"
}

config=configs/synthetic.yaml config_given=false
overrides=() train=() infer=() eval=() network=() per_image=()
gpu_given=false first=0 last=$((${#STAGES[@]} - 1))
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu) network+=(--gpu "$(value "$@")"); gpu_given=true; shift 2 ;;
        --gpu=*) network+=("$1"); gpu_given=true; shift ;;
        --restart) train+=(--restart); per_image+=(--overwrite); shift ;;
        --resume) train+=(--resume "$(value "$@")"); shift 2 ;;
        --resume=*) train+=("$1"); shift ;;
        --overwrite) per_image+=(--overwrite); shift ;;
        --sweep | --allow-missing) eval+=("$1"); shift ;;
        --type) eval+=(--type "$(value "$@")"); shift 2 ;;
        --type=*) eval+=("$1"); shift ;;
        --from) first=$(stage_index "$(value "$@")"); shift 2 ;;
        --to) last=$(stage_index "$(value "$@")"); shift 2 ;;
        -*) fail "unknown option $1 (it takes a config file, --gpu, --restart, --resume, --overwrite, --sweep," \
                 "--type, --allow-missing, --from, --to and key=value overrides)" ;;
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
((first <= last)) || fail "--from ${STAGES[$first]} comes after --to ${STAGES[$last]}"
# The demo runs on the CPU unless --gpu says otherwise.
if [[ "$(basename "$config")" == synthetic* && $gpu_given == false ]]; then
    network+=(--gpu cpu)
fi
# train: the CAM network's options; --restart also retrains the relation and segmentation networks
retrain=()
[[ " ${train[*]+"${train[*]}"} " == *" --restart "* ]] && retrain=(--restart)

run_stage() {  # SCRIPT [ARGS]: a stage script, or "-m tools.NAME"
    local script=$1
    shift
    echo "== $python $script --config $config $*"
    # shellcheck disable=SC2086  # "-m tools.scores" is two words
    "$python" $script --config "$config" "$@"
}
# ${...} references in overrides are resolved by the stages: the split and folders of the config in use.
for ((index = first; index <= last; index++)); do
    case "${STAGES[$index]}" in
        train_cam) run_stage train_cam.py "${network[@]+"${network[@]}"}" "${train[@]+"${train[@]}"}" \
                       "${overrides[@]+"${overrides[@]}"}" ;;
        infer_cam) run_stage infer_cam.py "${network[@]+"${network[@]}"}" "${per_image[@]+"${per_image[@]}"}" \
                       "${overrides[@]+"${overrides[@]}"}" ;;
        eval_cam) run_stage eval_cam.py "${eval[@]+"${eval[@]}"}" "${overrides[@]+"${overrides[@]}"}" ;;
        ir_labels)
            # after infer_cam's --overwrite above, the images it did not cover are redone without one
            cam_options=("${per_image[@]+"${per_image[@]}"}")
            ((first <= 1)) && cam_options=()
            run_stage infer_cam.py "${network[@]+"${network[@]}"}" "${cam_options[@]+"${cam_options[@]}"}" \
                "${overrides[@]+"${overrides[@]}"}" 'cam.split=${ir_labels.split}'
            run_stage make_ir_labels.py "${per_image[@]+"${per_image[@]}"}" "${overrides[@]+"${overrides[@]}"}" ;;
        train_irn) run_stage train_irn.py "${network[@]+"${network[@]}"}" "${retrain[@]+"${retrain[@]}"}" \
                       "${overrides[@]+"${overrides[@]}"}" ;;
        infer_irn) run_stage infer_irn.py "${network[@]+"${network[@]}"}" "${per_image[@]+"${per_image[@]}"}" \
                       "${overrides[@]+"${overrides[@]}"}" ;;
        eval_masks)
            run_stage eval_cam.py --type png "${overrides[@]+"${overrides[@]}"}" 'eval.png_dir=${pseudo_masks.dir}' \
                'eval.png_json=${pseudo_masks.eval_json}' ;;
        train_seg)
            # the pseudo masks of the segmentation network's images (after infer_irn's --overwrite above, the
            # images it did not cover are redone without one)
            mask_options=("${per_image[@]+"${per_image[@]}"}")
            ((first <= 5)) && mask_options=()
            run_stage infer_irn.py "${network[@]+"${network[@]}"}" "${mask_options[@]+"${mask_options[@]}"}" \
                "${overrides[@]+"${overrides[@]}"}" 'pseudo_masks.split=${seg.train.split}'
            run_stage train_seg.py "${network[@]+"${network[@]}"}" "${retrain[@]+"${retrain[@]}"}" \
                "${overrides[@]+"${overrides[@]}"}" ;;
        infer_seg) run_stage infer_seg.py "${network[@]+"${network[@]}"}" "${per_image[@]+"${per_image[@]}"}" \
                       "${overrides[@]+"${overrides[@]}"}" ;;
        eval_seg) run_stage eval_seg.py "${overrides[@]+"${overrides[@]}"}" ;;
    esac
done
# after a scoring stage (eval_masks, eval_seg), the scores of every stage scored so far, in one table
if (((first <= 6 && last >= 6) || last == 9)); then
    run_stage "-m tools.scores" "${overrides[@]+"${overrides[@]}"}"
fi
