# shellcheck shell=bash
# What rank_probe must print for ranks placed on nodes in order, shared by the rank
# discovery tests under mpirun (rank_discovery.sh) and under Slurm
# (slurm_rank_discovery.sh). Sourced; it defines a function and sets nothing else.
#   expected_lines LAUNCHER SLOTS...   LAUNCHER srun: Slurm's variables; mpirun: Open MPI's
expected_lines() {
  local launcher=$1 size=0 s i=0 l r=0
  shift
  for s in "$@"; do size=$((size + s)); done
  for s in "$@"; do
    for l in $(seq 0 $((s - 1))); do
      local line="rank=$r size=$size node=node$i nodes=$# local_rank=$l local_size=$s launcher=agrees"
      line+=" device=cuda:$l gpu=GPU-node$i-$l"
      if [ "$launcher" = srun ]; then
        line+=" SLURM_PROCID=$r SLURM_NTASKS=$size SLURM_LOCALID=$l SLURM_NODEID=$i SLURM_NNODES=$#"
      else
        line+=" OMPI_COMM_WORLD_RANK=$r OMPI_COMM_WORLD_SIZE=$size OMPI_COMM_WORLD_LOCAL_RANK=$l"
        line+=" OMPI_COMM_WORLD_LOCAL_SIZE=$s OMPI_COMM_WORLD_NODE_RANK=$l OMPI_MCA_orte_num_nodes=$#"
      fi
      echo "$line"
      r=$((r + 1))
    done
    i=$((i + 1))
  done
}
