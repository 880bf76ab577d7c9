// Where the optimizer runs. On the device by default; with DeepSpeed's offload_optimizer_device (or FSDP's
// CPU offload) its AdamW moments live in host memory and the update runs on the CPU backend: each step the
// range's gradients and parameters come down, AdamW updates them on the host, and the parameters go back up.
// The device then holds no moments (8 bytes per trainable parameter less). With ZeRO the range is this
// rank's shard, as in DeepSpeed's ZeRO-Offload.
import type { Backend, Tensor } from "../backend/types.ts";
import type { TrainableBuffers } from "../model/trainable.ts";
import { adamwOver, createOptimizerState, optimizerStep, type AdamWSettings, type OptimizerState } from "./optimizer.ts";

export interface OptimizerPlacement {
  /** The backend holding the moments (the device's, or the host's when offloaded). */
  readonly backend: Backend;
  readonly offloaded: boolean;
  createState(trainable: TrainableBuffers, range: { lo: number; hi: number }): OptimizerState;
  step(trainable: TrainableBuffers, state: OptimizerState, lr: number, s: AdamWSettings): Promise<void>;
}

export function optimizerOnDevice(device: Backend): OptimizerPlacement {
  return {
    backend: device,
    offloaded: false,
    createState: (trainable, range) => createOptimizerState(device, trainable, range),
    step(trainable, state, lr, s) {
      optimizerStep(device, trainable, state, lr, s);
      return Promise.resolve();
    },
  };
}

export function optimizerOnHost(device: Backend, host: Backend): OptimizerPlacement {
  let staging: { params: Tensor; grads: Tensor } | undefined;
  return {
    backend: host,
    offloaded: true,
    createState: (trainable, range) => createOptimizerState(host, trainable, range),
    async step(trainable, state, lr, s) {
      const { lo, hi } = state.range;
      const n = hi - lo;
      if (n <= 0) {
        state.step += 1;
        return;
      }
      staging ??= { params: host.alloc("f32", [n], "offload.params"), grads: host.alloc("f32", [n], "offload.grads") };
      host.upload(staging.grads, await device.downloadF32(device.rows(trainable.grads, lo, n)));
      host.upload(staging.params, await device.downloadF32(device.rows(trainable.params, lo, n)));
      adamwOver(host, staging.params, staging.grads, 0, state, lr, s);
      device.upload(device.rows(trainable.params, lo, n), await host.downloadF32(staging.params));
    },
  };
}
