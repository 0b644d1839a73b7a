// Drives the Hydrogen web client in headless Chromium against a running Hearth, as a person
// would: log in through the form, see the room list, open the room, send a message, and see
// the reply another user posts through the HTTP API. Started by tests/client_browser.rs,
// which starts Hearth, makes the accounts and the room, and passes them in the environment:
//
//   HEARTH_URL       the homeserver, http://127.0.0.1:PORT
//   HEARTH_USER      the user who logs in through the form (localpart), and HEARTH_PASSWORD
//   HEARTH_ROOM_NAME the room's name, as the room list shows it
//   HEARTH_OTHER_TOKEN  an access token of the other user in the room, who replies
//   HEARTH_ROOM_ID   the room's ID, for the reply
//   SCREENSHOT       where to save the screenshot (taken on success and on failure)
//   CHROMIUM         the browser (default /usr/bin/chromium)
//
// The app is bundled with esbuild and served on loopback from another port than Hearth's, so
// every request Hydrogen makes is cross-origin: CORS must be right for it to work at all.
// Exits 0 when every step was seen, 1 with the failing step, the browser console and the
// requests Hearth refused otherwise.

import http from "node:http";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import puppeteer from "puppeteer-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const env = (name) => {
    const value = process.env[name];
    if (!value) throw new Error(`${name} is not set`);
    return value;
};
const hearth = env("HEARTH_URL");
const user = env("HEARTH_USER");
const password = env("HEARTH_PASSWORD");
const roomName = env("HEARTH_ROOM_NAME");
const roomId = env("HEARTH_ROOM_ID");
const otherToken = env("HEARTH_OTHER_TOKEN");
const screenshot = env("SCREENSHOT");
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
// Each step waits at most STEP_MS (CI runs this beside the other tests on 2 cores); the whole
// run at most RUN_MS, after which the browser is closed and the run fails by itself, before
// the Rust test's own time limit would kill Node and leave Chromium behind.
const STEP_MS = 45_000;
const RUN_MS = 200_000;

/** Every line goes to stderr, which the Rust test shows whatever happens. */
const say = (line) => process.stderr.write(`${line}\n`);

const consoleLines = [];
const refused = [];

/** Bundles app/main.js with the SDK into one ES module; returns the folder to serve. */
async function buildApp() {
    const out = await fs.mkdtemp(path.join(os.tmpdir(), "hearth-hydrogen-"));
    await esbuild.build({
        entryPoints: [path.join(here, "app", "main.js")],
        bundle: true,
        format: "esm",
        outfile: path.join(out, "main.js"),
        // Olm's script names Node's modules for when it runs under Node; in a browser it never
        // loads them.
        external: ["fs", "path", "crypto"],
        logLevel: "warning",
    });
    await fs.copyFile(path.join(here, "app", "index.html"), path.join(out, "index.html"));
    return out;
}

/** Where each served path comes from: the bundle, the SDK's assets, Olm's files. */
function servedFile(app, urlPath) {
    const roots = [
        ["/assets/", path.join(here, "node_modules", "hydrogen-view-sdk", "asset-build", "assets")],
        ["/olm/", path.join(here, "node_modules", "@matrix-org", "olm")],
        ["/sw.js", path.join(here, "node_modules", "hydrogen-view-sdk", "lib-build", "sw.js")],
        ["/", app],
    ];
    for (const [prefix, root] of roots) {
        if (urlPath.startsWith(prefix)) {
            if (!prefix.endsWith("/")) return urlPath === prefix ? root : null;
            const file = path.normalize(path.join(root, urlPath.slice(prefix.length)));
            return file.startsWith(root) ? file : null;
        }
    }
    return null;
}

const TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm",
    ".svg": "image/svg+xml", ".woff": "font/woff", ".woff2": "font/woff2", ".json": "application/json",
};

/** A static file server on 127.0.0.1, on a port of its own. */
async function serveApp(app) {
    const server = http.createServer(async (req, res) => {
        const urlPath = decodeURIComponent(new URL(req.url, "http://x").pathname);
        const file = servedFile(app, urlPath === "/" ? "/index.html" : urlPath);
        try {
            const body = await fs.readFile(file);
            res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] || "application/octet-stream" });
            res.end(body);
        } catch {
            res.writeHead(404).end();
        }
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    return server;
}

/** The text of the page's visible body, for waiting on what a person would see. */
async function waitForText(page, text, what) {
    await step(what, () =>
        page.waitForFunction((t) => document.body.innerText.includes(t), { timeout: STEP_MS }, text),
    );
}

let currentStep = "start";
async function step(what, action) {
    currentStep = what;
    say(`browser: ${what}`);
    return action();
}

/** The other user's reply, posted through the client-server API. */
async function replyAsOtherUser(text) {
    const txn = `reply-${Date.now()}`;
    const url = `${hearth}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${txn}`;
    const answer = await fetch(url, {
        method: "PUT",
        headers: { Authorization: `Bearer ${otherToken}`, "Content-Type": "application/json" },
        body: JSON.stringify({ msgtype: "m.text", body: text }),
    });
    if (!answer.ok) throw new Error(`the reply was refused: ${answer.status} ${await answer.text()}`);
}

async function run(page, appUrl) {
    page.on("console", (message) => consoleLines.push(`[${message.type()}] ${message.text()}`));
    page.on("pageerror", (err) => consoleLines.push(`[pageerror] ${err.message}`));
    page.on("response", (response) => {
        if (response.url().startsWith(hearth) && response.status() >= 400) {
            refused.push(`${response.status()} ${response.request().method()} ${response.url()}`);
        }
    });
    page.on("requestfailed", (request) => {
        refused.push(`failed ${request.method()} ${request.url()}: ${request.failure()?.errorText}`);
    });

    await step("open the login page", () => page.goto(`${appUrl}#/login`, { waitUntil: "load" }));
    await step("the page's origin reads /versions across origins (CORS)", async () => {
        const versions = await page.evaluate(async (hs) => {
            const answer = await fetch(`${hs}/_matrix/client/versions`);
            return (await answer.json()).versions;
        }, hearth);
        if (!versions.includes("r0.6.1")) throw new Error(`versions: ${JSON.stringify(versions)}`);
    });
    await step("the login form asks for a password", () =>
        page.waitForSelector("#username", { visible: true, timeout: STEP_MS }),
    );
    await page.type("#username", user);
    await page.type("#password", password);
    await step("log in", () => page.keyboard.press("Enter"));

    await step("the room list shows the room", () =>
        page.waitForFunction(
            (name) => [...document.querySelectorAll(".RoomList li")].some((li) => li.innerText.includes(name)),
            { timeout: STEP_MS },
            roomName,
        ),
    );
    await step("open the room", () =>
        page.evaluate((name) => {
            const item = [...document.querySelectorAll(".RoomList li")].find((li) => li.innerText.includes(name));
            (item.querySelector("a") || item).click();
        }, roomName),
    );
    const composer = ".MessageComposer_input textarea, .MessageComposer_input input";
    await step("the room's composer appears", () =>
        page.waitForSelector(composer, { visible: true, timeout: STEP_MS }),
    );

    const mine = `Hello from Hydrogen ${Date.now()}`;
    await page.type(composer, mine);
    await step("send a message", () => page.keyboard.press("Enter"));
    await waitForText(page, mine, "the message shows in the timeline");
    await step("Hearth accepted the message (it is no longer pending)", () =>
        page.waitForFunction(
            (text) => [...document.querySelectorAll(".Timeline_message")].some(
                (tile) => tile.innerText.includes(text) && !tile.classList.contains("unsent"),
            ),
            { timeout: STEP_MS },
            mine,
        ),
    );

    const reply = `Hi back from the other side ${Date.now()}`;
    await step("the other user replies through the HTTP API", () => replyAsOtherUser(reply));
    await waitForText(page, reply, "the reply shows in the timeline");
    say(`browser: sent ${JSON.stringify(mine)}`);
}

async function main() {
    const app = await buildApp();
    const server = await serveApp(app);
    const appUrl = `http://127.0.0.1:${server.address().port}/index.html?hs=${encodeURIComponent(hearth)}`;
    const browser = await puppeteer.launch({
        executablePath: chromium,
        headless: true,
        // As root in CI, Chromium's sandbox cannot start; the page is our own app on loopback.
        args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,800"],
        defaultViewport: { width: 1280, height: 800 },
    });
    let failed = null;
    const page = await browser.newPage();
    let watchdog;
    const outOfTime = new Promise((_, reject) => {
        watchdog = setTimeout(() => reject(new Error(`the run took over ${RUN_MS} ms`)), RUN_MS);
    });
    try {
        await Promise.race([run(page, appUrl), outOfTime]);
    } catch (err) {
        failed = err;
    }
    clearTimeout(watchdog);
    await fs.mkdir(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot }).catch((err) => say(`no screenshot: ${err}`));
    say(`browser: screenshot saved to ${screenshot}`);
    await browser.close();
    server.close();
    await fs.rm(app, { recursive: true, force: true });
    if (failed) {
        say(`browser: FAILED at "${currentStep}": ${failed.message}`);
        say("browser: requests Hearth refused or that failed:");
        for (const line of refused) say(`  ${line}`);
        say("browser: console of the page:");
        for (const line of consoleLines) say(`  ${line}`);
        process.exit(1);
    }
    if (refused.length) {
        say("browser: requests Hearth refused along the way (not fatal):");
        for (const line of refused) say(`  ${line}`);
    }
    say("browser: PASSED");
}

main().catch((err) => {
    say(`browser: FAILED before the page ran: ${err.stack || err}`);
    process.exit(1);
});
