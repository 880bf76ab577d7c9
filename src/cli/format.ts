// Human formatting of counts and sizes for command output.

/** 6738415616 -> "6.74B", 20971520 -> "20.97M", 1234 -> "1.23K". */
export function formatCount(n: number): string {
  const units: [number, string][] = [
    [1e12, "T"],
    [1e9, "B"],
    [1e6, "M"],
    [1e3, "K"],
  ];
  for (const [size, suffix] of units) if (Math.abs(n) >= size) return `${(n / size).toFixed(2)}${suffix}`;
  return String(n);
}

/** Binary units, as GPU memory is quoted: 1536 -> "1.50 KiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(2)} ${units[i]!}`;
}

/** Left-aligned two-column table. */
export function table(rows: readonly (readonly [string, string])[], indent = "  "): string {
  const width = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${indent}${k.padEnd(width)}  ${v}`).join("\n");
}
