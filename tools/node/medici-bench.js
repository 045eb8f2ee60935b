// Medici (Node + Mongoose) posting transfers through the same server: argv = uri, n, workers.
const { Book, syncIndexes } = require("medici");
const mongoose = require("mongoose");
const [uri, n, workers, dbName] = [process.argv[2], +process.argv[3], +process.argv[4], process.argv[5]];
let commands = 0;
const names = {};
async function main() {
  const conn = await mongoose.connect(uri, { dbName, monitorCommands: true });
  conn.connection.getClient().on("commandStarted", (e) => {
    if (!["hello", "isMaster", "ismaster", "ping", "endSessions"].includes(e.commandName)) {
      commands++;
      names[e.commandName] = (names[e.commandName] || 0) + 1;
    }
  });
  await syncIndexes();
  const book = new Book("bench");
  async function transfer(i, session) {
    const [from, to] = i % 2 ? ["Assets:B", "Assets:A"] : ["Assets:A", "Assets:B"];
    await book.entry(`t${i}`).debit(from, 1).credit(to, 1).commit({ session });
  }
  async function inTransaction(i) {
    await mongoose.connection.transaction(async (session) => transfer(i, session));
  }
  for (let i = 0; i < 10; i++) await inTransaction(i);  // warm
  commands = 0;
  for (const k of Object.keys(names)) delete names[k];
  let t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await inTransaction(i);
  const sequential = Number(process.hrtime.bigint() - t) / 1e9;
  const perTransfer = commands / n;
  const perTransferNames = Object.fromEntries(Object.entries(names).map(([k, v]) => [k, v / n]));
  const per = Math.max(Math.floor(n / workers), 1);
  let failed = 0;
  t = process.hrtime.bigint();
  await Promise.all(Array.from({ length: workers }, (_, w) => (async () => {
    for (let i = 0; i < per; i++) {
      try { await inTransaction(w * per + i); } catch (e) { failed++; }
    }
  })()));
  const concurrent = Number(process.hrtime.bigint() - t) / 1e9;
  const a = (await book.balance({ account: "Assets:A" })).balance;
  const b = (await book.balance({ account: "Assets:B" })).balance;
  const entries = await mongoose.connection.db.collection("medici_journals").countDocuments({ book: "bench" });
  console.log(JSON.stringify({
    sequential_ops_s: n / sequential, commands_per_transfer: perTransfer,
    commands: perTransferNames,
    concurrent_ops_s: (workers * per - failed) / concurrent, workers, failed,
    balance_sum: a + b, journal_entries: entries, expected_entries: 10 + n + workers * per - failed,
  }));
  await mongoose.disconnect();
}
main().catch((e) => { console.error(e && e.stack || e); process.exit(1); });
