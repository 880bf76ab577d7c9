// Runs the CLI from source (no bundle): `npx tsx tools/tuna-dev.ts <command> ...`, for development.
import { main } from "../src/cli/main.ts";

process.exitCode = await main(process.argv.slice(2));
