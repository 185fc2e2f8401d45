// The minimal Probot app bench_ingest.py compares flops-bot's intake with: Probot verifies
// X-Hub-Signature-256 and routes the delivery to this handler, which does no work.
export default (app) => {
  app.on("push", async () => {});
};
