// Whether an adapter's base_model_name_or_path names the model it is being applied to. PEFT itself does
// not check; an adapter on the wrong base loads fine (same shapes) and produces nonsense, so tuna warns.
import { realpathSync } from "node:fs";
import { basename, isAbsolute, resolve } from "node:path";

/** The names a model goes by: what the user typed, its folder (and real path), and a cached hub id. */
function namesOf(modelArg: string, modelDir: string): Set<string> {
  const names = new Set([modelArg, resolve(modelArg), modelDir]);
  try {
    names.add(realpathSync(modelDir));
  } catch {
    // a folder that vanished meanwhile: the other names still count
  }
  const cached = /models--([^/\\]+)--([^/\\]+)[/\\]snapshots[/\\]/.exec(modelDir);
  if (cached !== null) names.add(`${cached[1]}/${cached[2]}`);
  return names;
}

/**
 * A warning when `adapterBase` (the adapter's base_model_name_or_path) names neither the model given nor
 * a folder of the same name (adapters are often trained elsewhere, on a copy); undefined when it matches
 * or the adapter does not say.
 */
export function adapterBaseWarning(adapterBase: string | null, modelArg: string, modelDir: string, adapterDir: string): string | undefined {
  if (adapterBase === null || adapterBase.trim() === "") return undefined;
  const names = namesOf(modelArg, modelDir);
  const looksLikePath = isAbsolute(adapterBase) || adapterBase.startsWith(".");
  const forms = looksLikePath ? [adapterBase, resolve(adapterBase)] : [adapterBase];
  if (forms.some((f) => names.has(f))) return undefined;
  const lastPart = (s: string): string => basename(s.replace(/[/\\]+$/, ""));
  const baseName = lastPart(adapterBase);
  if ([...names].some((n) => lastPart(n) === baseName)) return undefined;
  return (
    `the adapter ${adapterDir} was trained on "${adapterBase}" (base_model_name_or_path), but it is applied to ${modelArg}; ` +
    "if that is another model, the results are meaningless. Pass the model it was trained on."
  );
}
