// Reads the CUDA sources as text for the GPU-less tests: the kernels each .cu file defines (with the
// KernelArg kind of every parameter) and the kernels each op wrapper in ops/*.ts asks for.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const KERNELS_DIR = fileURLToPath(new URL("../../../src/backend/cuda/kernels/", import.meta.url));
export const OPS_DIR = fileURLToPath(new URL("../../../src/backend/cuda/ops/", import.meta.url));

/** The KernelArg key a parameter takes (see src/backend/cuda/types.ts), or "unknown" for a type no KernelArg packs. */
export type ParamKind = "ptr" | "i32" | "u32" | "i64" | "u64" | "f32" | "unknown";

export function cuFiles(): string[] {
  return readdirSync(KERNELS_DIR)
    .filter((f) => f.endsWith(".cu"))
    .sort();
}

function stripComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");
}

function paramKind(param: string): ParamKind {
  if (param.includes("*")) return "ptr";
  // Qualifiers that do not change how the argument is packed.
  param = param.replace(/\b__restrict__\b/g, " ");
  const type = param
    .replace(/\b\w+\s*$/, "")
    .replace(/\bconst\b/g, "")
    .replace(/\s+/g, " ")
    .trim();
  const kinds: Record<string, ParamKind> = {
    int: "i32",
    "unsigned int": "u32",
    unsigned: "u32",
    "long long": "i64",
    "long long int": "i64",
    "unsigned long long": "u64",
    float: "f32",
  };
  return kinds[type] ?? "unknown";
}

function kernelPattern(): RegExp {
  const bounds = String.raw`(?:__launch_bounds__\s*\([^)]*\)\s*)?`;
  return new RegExp(String.raw`extern\s+"C"\s+__global__\s+${bounds}void\s+${bounds}(\w+)\s*\(([^)]*)\)`, "g");
}

function params(list: string): ParamKind[] {
  return list.trim() === "" ? [] : list.split(",").map((p) => paramKind(p.trim()));
}

/**
 * Every `extern "C" __global__` kernel of a .cu file: its name and its parameters' kinds, in order. Kernels
 * stamped out by a macro (`#define K(NAME, D) extern "C" __global__ void NAME(...)`, then `K(name_d64, 64)`)
 * count under the names the invocations give.
 */
export function kernelSignatures(file: string): Map<string, ParamKind[]> {
  const source = stripComments(readFileSync(path.join(KERNELS_DIR, file), "utf8")).replace(/\\\r?\n/g, " ");
  const lines = source.split("\n");
  const isDefine = (line: string): boolean => /^\s*#\s*define\b/.test(line);
  const found = new Map<string, ParamKind[]>();
  for (const m of lines.filter((l) => !isDefine(l)).join("\n").matchAll(kernelPattern())) found.set(m[1]!, params(m[2]!));
  for (const line of lines.filter(isDefine)) {
    const def = /^\s*#\s*define\s+(\w+)\(([^)]*)\)(.*)$/.exec(line);
    if (def === null) continue;
    const macroParams = def[2]!.split(",").map((p) => p.trim());
    for (const k of def[3]!.matchAll(kernelPattern())) {
      const index = macroParams.indexOf(k[1]!);
      if (index < 0) continue;
      for (const call of lines.filter((l) => !isDefine(l)).join("\n").matchAll(new RegExp(String.raw`\b${def[1]!}\(([^()]*)\)`, "g"))) {
        const name = call[1]!.split(",")[index]?.trim();
        if (name !== undefined && /^\w+$/.test(name)) found.set(name, params(k[2]!));
      }
    }
  }
  return found;
}

export interface KernelRequest {
  opsFile: string;
  /** The .cu file, when the request is written dev.module("x.cu").fn("name"). */
  module: string | null;
  kernel: string;
}

/** The kernels ops/*.ts request with a literal .fn("name"), and the modules each file opens. */
export function kernelRequests(): { requests: KernelRequest[]; modulesByFile: Map<string, string[]> } {
  const requests: KernelRequest[] = [];
  const modulesByFile = new Map<string, string[]>();
  for (const opsFile of readdirSync(OPS_DIR).filter((f) => f.endsWith(".ts")).sort()) {
    const source = stripComments(readFileSync(path.join(OPS_DIR, opsFile), "utf8"));
    modulesByFile.set(opsFile, [...new Set([...source.matchAll(/\.module\(\s*"([^"]+)"\s*\)/g)].map((m) => m[1]!))]);
    for (const m of source.matchAll(/(?:\.module\(\s*"([^"]+)"\s*\)\s*)?\.fn\(\s*"([^"]+)"\s*\)/g)) {
      requests.push({ opsFile, module: m[1] ?? null, kernel: m[2]! });
    }
  }
  return { requests, modulesByFile };
}
