// The public face of tuna's configuration layer: the train schema, argument parsing, accelerate files
// and the text rendered from them. Other modules import from here, not from the files behind it.
export { TRAIN_FIELDS, FIELD_NAMES, OPTIMIZER_MAPPING, DPO_LOSS_TYPES, type TrainConfig, type FieldName } from "./schema.ts";
export type { FieldSpec, Group } from "./fields.ts";
export { parseTrainArgs, type ResolvedTrainConfig } from "./resolve.ts";
export { describeSource, type FieldSource } from "./problems.ts";
export {
  readAccelerateConfig,
  describeLaunch,
  type LaunchConfig,
  type Sharding,
  type MixedPrecision,
  type OffloadDevice,
  type FsdpShardingStrategy,
} from "./accelerate.ts";
export { renderTrainHelp, renderFlagsPage, formatResolvedConfig } from "./render.ts";
export { unsupportedFeatures } from "./validate.ts";
