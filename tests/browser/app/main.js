// The Hydrogen web client, whole, as its own app starts it: the root view model shows the login
// page, then the session (room list, rooms, composer). The homeserver is the Hearth under test,
// given in the page's query string, so the app never looks anywhere else.
import { FeatureSet, Platform, RootViewModel, createNavigation, createRouter } from "hydrogen-view-sdk";

const homeserver = new URLSearchParams(window.location.search).get("hs");
const assetPaths = {
    downloadSandbox: "assets/download-sandbox.html",
    worker: "assets/main.js",
    olm: { wasm: "olm/olm.wasm", legacyBundle: "olm/olm_legacy.js", wasmBundle: "olm/olm.js" },
    // Hydrogen keeps the session's access token in its service worker (for authenticated
    // media), and cannot log in without one.
    serviceWorker: "sw.js",
};

async function main() {
    const platform = new Platform({
        container: document.body,
        assetPaths,
        config: { defaultHomeServer: homeserver },
        options: { development: true },
    });
    const navigation = createNavigation();
    platform.setNavigation(navigation);
    await platform.init();
    const urlRouter = createRouter({ navigation, history: platform.history });
    urlRouter.attach();
    const features = await FeatureSet.load(platform.settingsStorage);
    const vm = new RootViewModel({ platform, urlRouter, navigation, features });
    await vm.load();
    platform.createAndMountRootView(vm);
}

main().catch((err) => console.error("hydrogen failed to start:", err));
