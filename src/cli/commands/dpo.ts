// `tuna dpo`: preference training with TRL's DPOTrainer semantics; the rest of the recipe is tuna train's.
import type { CliOutput } from "../output.ts";
import { runTrainingCommand } from "./train.ts";

export function dpoCommand(args: string[], output: CliOutput): Promise<number> {
  return runTrainingCommand(args, output, "dpo");
}
