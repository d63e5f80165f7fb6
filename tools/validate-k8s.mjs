// Validates rendered Kubernetes manifests (stdin, multi-document YAML)
// against the Kubernetes and prometheus-operator schemas, offline.
// usage: kubectl kustomize deploy/k8s/overlays/cpu | node tools/validate-k8s.mjs
// Prints OK / FAIL / SKIP per document; exits 1 when any failed or none was read.
import * as yaml from "js-yaml";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const docs = yaml.loadAll(Buffer.concat(chunks).toString("utf8")).filter((d) => d);

function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

let failed = 0;
for (const doc of docs) {
  const name = `${doc.kind}/${doc.metadata?.name ?? "?"}`;
  let mod;
  try {
    mod = await import(modulePath(doc.apiVersion ?? "", doc.kind ?? ""));
  } catch {
    console.log(`SKIP ${name} (no schema for ${doc.apiVersion})`);
    continue;
  }
  try {
    new mod[doc.kind](doc).validate();
    console.log(`OK   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.message}`);
  }
}
if (docs.length === 0) {
  console.log("FAIL no documents on stdin");
  process.exit(1);
}
process.exit(failed ? 1 : 0);
