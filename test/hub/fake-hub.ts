// A loopback stand-in for the Hugging Face hub: the routes @huggingface/hub requests (repo info, tree,
// resolve with Range and a same-origin LFS redirect), with git/LFS etags, failure injection and a request log.

import { createHash } from "node:crypto";
import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeRepo {
  kind: "model" | "dataset";
  id: string;
  commit: string;
  files: Record<string, string | Buffer>;
  /** Files stored with LFS: served through a redirect to /cdn/<sha256> with X-Linked-ETag. */
  lfs?: string[];
  /** Other revisions (branches, tags) pointing at the commit. */
  refs?: string[];
  /** Answer every request about this repo with this status. */
  status?: number;
  /** Answer requests for these files with 500. */
  brokenFiles?: string[];
  /** ETag header values to send for these files instead of their hashes (hostile-hub tests). */
  etags?: Record<string, string>;
}

export interface LoggedRequest {
  method: string;
  path: string;
  authorization: string | undefined;
}

/** What was pushed to a repo created through the fake hub (createRepo + commit). */
export interface PushedRepo {
  id: string;
  private: boolean;
  /** Each commit's title and the files it added, by path. */
  commits: { title: string; files: Record<string, Buffer> }[];
}

export interface FakeHub {
  url: string;
  requests: LoggedRequest[];
  /** Repos created and committed to, by id ("org/name"). Writes need `Authorization: Bearer <writeToken>`. */
  pushed: Map<string, PushedRepo>;
  close(): Promise<void>;
}

/** The token the fake hub accepts for writes. */
export const FAKE_WRITE_TOKEN = "hf_fake_write_token_0123456789";

/** Git's blob id: sha1 over "blob <length>\0" and the content (the ETag the hub sends for non-LFS files). */
export function gitBlobId(content: string | Buffer): string {
  const bytes = Buffer.from(content);
  return createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");
}

export function sha256(content: string | Buffer): string {
  return createHash("sha256").update(content).digest("hex");
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

// Serve bytes honouring a single "bytes=a-b" range, as the hub and its CDN do.
function sendBytes(req: IncomingMessage, res: ServerResponse, body: Buffer, headers: Record<string, string>): void {
  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
  const start = range ? Number(range[1]) : 0;
  const end = range && range[2] !== "" ? Math.min(Number(range[2]), body.length - 1) : body.length - 1;
  const part = body.subarray(start, end + 1);
  const status = range ? 206 : 200;
  const rangeHeader: Record<string, string> = range ? { "Content-Range": `bytes ${start}-${end}/${body.length}` } : {};
  res.writeHead(status, { ...headers, ...rangeHeader, "Content-Length": String(part.length), "Accept-Ranges": "bytes" });
  res.end(req.method === "HEAD" ? undefined : part);
}

function notFound(res: ServerResponse, code: string, message: string): void {
  sendJson(res, 404, { error: message }, { "X-Error-Code": code });
}

export async function startFakeHub(repos: FakeRepo[]): Promise<FakeHub> {
  const requests: LoggedRequest[] = [];
  const blobsBySha = new Map<string, string | Buffer>();
  for (const repo of repos) for (const content of Object.values(repo.files)) blobsBySha.set(sha256(content), content);

  const find = (kind: string, id: string): FakeRepo | undefined =>
    repos.find((r) => `${r.kind}s` === kind && r.id === id);
  const revisionOk = (repo: FakeRepo, rev: string): boolean =>
    rev === repo.commit || rev === "main" || (repo.refs ?? []).includes(rev);

  const pushed = new Map<string, PushedRepo>();
  const uploaded = new Map<string, Buffer>();
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = decodeURIComponent(url.pathname);
    requests.push({ method: req.method ?? "GET", path: `${path}${url.search}`, authorization: req.headers.authorization });
    if (req.method === "POST" || req.method === "PUT") {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        handleWrite(req, res, path, Buffer.concat(chunks), `http://${req.headers.host ?? ""}`);
      });
      return;
    }

    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(path);
    if (cdn) {
      const content = blobsBySha.get(cdn[1]!);
      if (content === undefined) {
        notFound(res, "EntryNotFound", "no such blob");
        return;
      }
      sendBytes(req, res, Buffer.from(content), { ETag: `"${cdn[1]!}"` });
      return;
    }

    const api = /^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)(?:\/(.*))?$/.exec(path);
    const resolve = /^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const kind = api ? api[1]! : resolve ? (resolve[1] ? "datasets" : "models") : undefined;
    const repo = kind === undefined ? undefined : find(kind, (api ? api[2] : resolve?.[2])!);
    if (repo === undefined) {
      sendJson(res, 404, { error: "Repository not found" }, { "X-Error-Code": "RepoNotFound" });
      return;
    }
    if (repo.status !== undefined) {
      sendJson(res, repo.status, { error: `status ${repo.status} for test` });
      return;
    }
    const rev = (api ? api[4] : resolve?.[3])!;
    if (!revisionOk(repo, rev)) {
      notFound(res, "RevisionNotFound", `Invalid rev id: ${rev}`);
      return;
    }

    if (api?.[3] === "revision") {
      sendJson(res, 200, {
        _id: `id-${repo.id}`,
        id: repo.id,
        sha: repo.commit,
        siblings: Object.keys(repo.files).map((rfilename) => ({ rfilename })),
        private: false,
        gated: false,
        downloads: 0,
        likes: 0,
        lastModified: "2024-01-01T00:00:00.000Z",
      });
      return;
    }
    if (api?.[3] === "tree") {
      // Paged two entries at a time with a Link header, like the real tree API's cursor.
      const entries = Object.entries(repo.files).map(([p, content]) => ({
        type: "file",
        path: p,
        size: Buffer.byteLength(content),
        oid: gitBlobId(content),
      }));
      const start = Number(url.searchParams.get("cursor") ?? "0");
      const next = start + 2;
      const link: Record<string, string> = {};
      if (next < entries.length) {
        const nextUrl = new URL(url.toString().replace("http://localhost", `http://${req.headers.host ?? ""}`));
        nextUrl.searchParams.set("cursor", String(next));
        link.Link = `<${nextUrl.toString()}>; rel="next"`;
      }
      sendJson(res, 200, entries.slice(start, next), link);
      return;
    }

    const file = resolve![4]!;
    const content = repo.files[file];
    if (content === undefined) {
      notFound(res, "EntryNotFound", `${file} does not exist`);
      return;
    }
    if ((repo.brokenFiles ?? []).includes(file)) {
      sendJson(res, 500, { error: "Internal Error" });
      return;
    }
    const common = { "X-Repo-Commit": repo.commit };
    if ((repo.lfs ?? []).includes(file)) {
      const oid = sha256(content);
      res.writeHead(302, {
        ...common,
        Location: `/cdn/${oid}`,
        "X-Linked-ETag": repo.etags?.[file] ?? `"${oid}"`,
        "X-Linked-Size": String(Buffer.byteLength(content)),
      });
      res.end();
      return;
    }
    sendBytes(req, res, Buffer.from(content), { ...common, ETag: repo.etags?.[file] ?? `"${gitBlobId(content)}"` });
    return;
  });

  // The write routes @huggingface/hub's createRepo and commit (useXet false) use: create, preupload, the LFS
  // batch API with a basic PUT per object, and the NDJSON commit.
  function handleWrite(req: IncomingMessage, res: ServerResponse, path: string, body: Buffer, base: string): void {
    // LFS uploads go to the storage URL the batch answer gave (presigned, as on the real hub): no token.
    const presigned = req.method === "PUT" && path.startsWith("/lfs-upload/");
    if (!presigned && req.headers.authorization !== `Bearer ${FAKE_WRITE_TOKEN}`) {
      sendJson(res, 401, { error: "Invalid credentials in Authorization header" });
      return;
    }
    if (path === "/api/repos/create") {
      const b = JSON.parse(body.toString("utf8")) as { name: string; organization: string; visibility?: string; type: string };
      const id = `${b.organization}/${b.name}`;
      if (pushed.has(id)) {
        sendJson(res, 409, { error: "You already created this model repo", url: `${base}/${id}` });
        return;
      }
      pushed.set(id, { id, private: b.visibility === "private", commits: [] });
      sendJson(res, 200, { url: `${base}/${id}`, id: `id-${id}` });
      return;
    }
    const preupload = /^\/api\/models\/([^/]+\/[^/]+)\/preupload\/main$/.exec(path);
    if (preupload) {
      const b = JSON.parse(body.toString("utf8")) as { files: { path: string; size: number }[] };
      sendJson(res, 200, { files: b.files.map((f) => ({ path: f.path, uploadMode: f.path.endsWith(".safetensors") || f.size > 1_000_000 ? "lfs" : "regular" })) });
      return;
    }
    const batch = /^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/.exec(path);
    if (batch) {
      const b = JSON.parse(body.toString("utf8")) as { objects: { oid: string; size: number }[] };
      sendJson(res, 200, { transfer: "basic", objects: b.objects.map((o) => ({ oid: o.oid, size: o.size, actions: { upload: { href: `${base}/lfs-upload/${o.oid}` } } })) });
      return;
    }
    const put = /^\/lfs-upload\/([0-9a-f]{64})$/.exec(path);
    if (put && req.method === "PUT") {
      if (sha256(body) !== put[1]) {
        sendJson(res, 400, { error: "the uploaded bytes do not hash to the oid" });
        return;
      }
      uploaded.set(put[1], body);
      res.writeHead(200);
      res.end();
      return;
    }
    const commit = /^\/api\/models\/([^/]+\/[^/]+)\/commit\/main$/.exec(path);
    const repo = commit ? pushed.get(commit[1]!) : undefined;
    if (commit && repo !== undefined) {
      const lines = body.toString("utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { key: string; value: Record<string, string> });
      const files: Record<string, Buffer> = {};
      let title = "";
      for (const line of lines) {
        if (line.key === "header") title = line.value["summary"] ?? "";
        else if (line.key === "file") files[line.value["path"]!] = Buffer.from(line.value["content"]!, "base64");
        else if (line.key === "lfsFile") {
          const blob = uploaded.get(line.value["oid"]!);
          if (blob === undefined) {
            sendJson(res, 400, { error: `LFS object ${line.value["oid"]} was never uploaded` });
            return;
          }
          files[line.value["path"]!] = blob;
        }
      }
      repo.commits.push({ title, files });
      sendJson(res, 200, { commitOid: `c${repo.commits.length}`, commitUrl: `${base}/${repo.id}/commit/c${repo.commits.length}` });
      return;
    }
    sendJson(res, 404, { error: `no write route for ${path}` });
  }

  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    pushed,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => {
          done();
        });
      }),
  };
}

/** A URL on which nothing listens: a server is started on port 0 to reserve a port, then closed. */
export async function deadEndpoint(): Promise<string> {
  const hub = await startFakeHub([]);
  await hub.close();
  return hub.url;
}
