// processPlace against the variables each launcher sets, their precedence, and bad values.
import { test } from "node:test";
import assert from "node:assert/strict";
import { firstSlurmHost, processPlace } from "../../src/dist/launch-env.ts";
import { TunaError } from "../../src/util/errors.ts";

void test("no launcher: rank 0 of 1", () => {
  assert.deepEqual(processPlace({}), { rank: 0, worldSize: 1, localRank: 0, localWorldSize: 1, masterAddr: undefined, masterPort: undefined, agentStore: false, restartCount: 0, source: "single process" });
});

void test("torchrun, Kubernetes PET_*, mpirun OMPI_* and PMI_*, and SLURM each give rank, world, local rank and master", () => {
  assert.deepEqual(processPlace({ RANK: "3", WORLD_SIZE: "8", LOCAL_RANK: "1", LOCAL_WORLD_SIZE: "2", MASTER_ADDR: "10.0.0.1", MASTER_PORT: "29500" }), {
    rank: 3, worldSize: 8, localRank: 1, localWorldSize: 2, masterAddr: "10.0.0.1", masterPort: 29500, agentStore: false, restartCount: 0, source: "torchrun",
  });
  assert.deepEqual(processPlace({ PET_RANK: "1", PET_WORLD_SIZE: "2", PET_NPROC_PER_NODE: "1", PET_MASTER_ADDR: "job-master-0", PET_MASTER_PORT: "23456" }), {
    rank: 1, worldSize: 2, localRank: 1, localWorldSize: 1, masterAddr: "job-master-0", masterPort: 23456, agentStore: false, restartCount: 0, source: "kubernetes (PET_*)",
  });
  assert.equal(processPlace({ OMPI_COMM_WORLD_RANK: "5", OMPI_COMM_WORLD_SIZE: "6", OMPI_COMM_WORLD_LOCAL_RANK: "1", OMPI_COMM_WORLD_LOCAL_SIZE: "2" }).source, "mpirun (OMPI_*)");
  assert.equal(processPlace({ PMI_RANK: "0", PMI_SIZE: "2" }).worldSize, 2);
  const slurm = processPlace({ SLURM_PROCID: "2", SLURM_NTASKS: "4", SLURM_LOCALID: "0", SLURM_NODELIST: "gpu[07-08,11]" });
  assert.deepEqual([slurm.rank, slurm.worldSize, slurm.localRank, slurm.masterAddr, slurm.source], [2, 4, 0, "gpu07", "slurm"]);
});

void test("precedence: torchrun inside srun wins over SLURM_*; PET_* over OMPI_*", () => {
  const env = { SLURM_PROCID: "0", SLURM_NTASKS: "1", RANK: "1", WORLD_SIZE: "2" };
  assert.equal(processPlace(env).source, "torchrun");
  assert.equal(processPlace({ PET_RANK: "0", PET_WORLD_SIZE: "2", OMPI_COMM_WORLD_RANK: "1", OMPI_COMM_WORLD_SIZE: "2" }).source, "kubernetes (PET_*)");
});

void test("bad values are CONFIG_INVALID naming the variable", () => {
  const bad = (env: Record<string, string>, pattern: RegExp): void => {
    assert.throws(() => processPlace(env), (e: unknown) => e instanceof TunaError && e.code === "CONFIG_INVALID" && pattern.test(e.message));
  };
  bad({ RANK: "2", WORLD_SIZE: "2" }, /RANK=2 is not below WORLD_SIZE=2/);
  bad({ RANK: "x", WORLD_SIZE: "2" }, /RANK=x/);
  bad({ RANK: "0" }, /WORLD_SIZE/);
  bad({ RANK: "0", WORLD_SIZE: "2", MASTER_PORT: "http" }, /MASTER_PORT=http/);
});

void test("SLURM node lists: the first host", () => {
  assert.equal(firstSlurmHost("node01"), "node01");
  assert.equal(firstSlurmHost("node[3-5,9]"), "node3");
  assert.equal(firstSlurmHost("a[01-02],b[7]"), "a01");
});

void test("under torchrun's agent store (TORCHELASTIC_USE_AGENT_STORE) ranks join the agent's store on MASTER_PORT, per restart", () => {
  const env = { RANK: "0", WORLD_SIZE: "2", MASTER_ADDR: "127.0.0.1", MASTER_PORT: "29500" };
  assert.deepEqual([processPlace(env).masterPort, processPlace(env).agentStore, processPlace(env).restartCount], [29500, false, 0]);
  const agent = processPlace({ ...env, TORCHELASTIC_USE_AGENT_STORE: "True", TORCHELASTIC_RESTART_COUNT: "2" });
  assert.deepEqual([agent.masterPort, agent.agentStore, agent.restartCount], [29500, true, 2]);
});
