// `tuna train`: help, argument parsing and validation, and the resolved-configuration printout.
// The training engine arrives in a later version; until then the command says so instead of pretending.
import { TunaError } from "../../util/errors.ts";
import type { CliOutput } from "../output.ts";
import { formatResolvedConfig, parseTrainArgs, renderTrainHelp, unsupportedFeatures } from "../../config/index.ts";

export async function trainCommand(args: string[], output: CliOutput): Promise<number> {
  if (args.includes("--help") || args.includes("-h")) {
    output.out(renderTrainHelp());
    return 0;
  }
  const resolved = await parseTrainArgs(args);
  const unsupported = unsupportedFeatures(resolved.config);
  if (resolved.config.print_config) {
    output.out(formatResolvedConfig(resolved));
    for (const message of unsupported) output.err(`note: ${message}`);
    return 0;
  }
  if (unsupported.length > 0) throw new TunaError("UNSUPPORTED", unsupported.join("\n"));
  output.out(formatResolvedConfig(resolved));
  throw new TunaError(
    "UNSUPPORTED",
    "training is not implemented yet in this version of tuna; the configuration above was parsed and validated, " +
      "but no model was loaded and nothing was trained. Use --print_config to check a configuration without this error.",
  );
}
