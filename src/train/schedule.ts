// Learning-rate schedules as transformers' optimization.py defines them (LambdaLR multipliers of the
// base lr). Optimizer update k (1-based) uses multiplier(k - 1), as torch's scheduler stepping does.

export type SchedulerType = "linear" | "cosine" | "cosine_with_restarts" | "polynomial" | "constant" | "constant_with_warmup";

export interface ScheduleOptions {
  type: SchedulerType;
  warmupSteps: number;
  totalSteps: number; // T = max_steps
  /** cosine_with_restarts cycles (lr_scheduler_kwargs num_cycles); HF default 1. */
  numCycles?: number;
  /** polynomial: HF defaults lr_end 1e-7, power 1. */
  lrEnd?: number;
  power?: number;
  baseLr: number;
}

/** HF: warmup_steps if > 0, else ceil(max_steps * warmup_ratio). */
export function resolveWarmupSteps(warmupSteps: number, warmupRatio: number, totalSteps: number): number {
  if (warmupSteps > 0) return warmupSteps < 1 ? Math.ceil(warmupSteps * totalSteps) : Math.floor(warmupSteps);
  return Math.ceil(totalSteps * warmupRatio);
}

/** The multiplier at scheduler step s (0 for the first update). */
export function lrMultiplier(s: number, o: ScheduleOptions): number {
  const W = o.warmupSteps;
  const T = o.totalSteps;
  if (o.type === "constant") return 1;
  if (s < W) return s / Math.max(1, W);
  const progress = (s - W) / Math.max(1, T - W);
  switch (o.type) {
    case "constant_with_warmup":
      return 1;
    case "linear":
      return Math.max(0, (T - s) / Math.max(1, T - W));
    case "cosine":
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    case "cosine_with_restarts": {
      if (progress >= 1) return 0;
      const cycles = o.numCycles ?? 1;
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((cycles * progress) % 1))));
    }
    case "polynomial": {
      const lrEnd = o.lrEnd ?? 1e-7;
      const power = o.power ?? 1;
      if (s > T) return lrEnd / o.baseLr;
      const decay = (o.baseLr - lrEnd) * Math.pow(1 - (s - W) / (T - W), power) + lrEnd;
      return decay / o.baseLr;
    }
  }
}

export function learningRate(s: number, o: ScheduleOptions): number {
  return o.baseLr * lrMultiplier(s, o);
}
