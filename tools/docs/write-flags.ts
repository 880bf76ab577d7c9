// Writes docs/flags.md from the schema and the table of Python-stack options (src/config/render.ts).
//   npx tsx tools/docs/write-flags.ts
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { renderFlagsPage } from "../../src/config/render.ts";

await writeFile(join(import.meta.dirname, "../../docs/flags.md"), renderFlagsPage());
