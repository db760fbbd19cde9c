"""Drives the dashboard in Debian's headless Chromium over WebDriver (selenium), as a member would.

    dashboard.py BASE_URL API_KEY SCREENSHOT_DIRECTORY AXE_SCRIPT OPERATOR_KEY

The grid's nodes have no panels: a task with an hour of slack waits for the sun (queued), one
due within three minutes runs at once. The script opens a task's address before signing in and
lands on it after; sees a task complete live; filters and pages the task table; reads a refused
task's reason; cancels a waiting task; grants and revokes a consent; goes Back and Forward;
runs axe-core on every view (no serious or critical violation); checks the layout at 400 px;
saves a screenshot of each view. Then it signs out and in again as the operator and reads the
Health view (the writer listed, axe-core again). Exit 0 when all of it held; prints what it saw
as JSON.
"""
import datetime, json, os, sys, urllib.request, uuid

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait
from selenium.common.exceptions import StaleElementReferenceException

base, key, shots, axe_script, operator_key = sys.argv[1:6]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"]:
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_script_timeout(60)
# The live views redraw as events come: an element found may be replaced before it is used.
wait = WebDriverWait(driver, 40, ignored_exceptions=[StaleElementReferenceException])
seen = {"axe": {}}
AXE = open(axe_script).read()


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request))


def task(minutes, **kind):
    deadline = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)).isoformat()
    body = {"copropriete_id": str(uuid.uuid4()), "deadline": deadline,
            "kind": kind or {"type": "building_thermal_simulation", "building_id": str(uuid.uuid4()),
                             "insulation_score": 0.5, "surface_m2": 90.0, "heating_degree_days": 2400.0}}
    return api("POST", "/v1/tasks", body)["task_id"]


def settled(command_id):
    wait.until(lambda _page: api("GET", f"/v1/commands/{command_id}")["status"] != "pending")


def text(selector):
    return wait.until(lambda page: page.find_element(By.CSS_SELECTOR, selector).text)


def task_rows():
    """The ids of the task table's rows (read again if the table redrew meanwhile)."""
    return wait.until(lambda page: [row.get_attribute("data-task") for row in page.find_elements(By.CSS_SELECTOR, "#tasks tbody tr")])


def click(selector):
    """Clicks what `selector` finds, finding it again if the page redrew it meanwhile."""
    def clicked(page):
        page.find_element(By.CSS_SELECTOR, selector).click()
        return True
    wait.until(clicked)


def view(name):
    """Opens a view from the navigation, with the keyboard."""
    link = driver.find_element(By.CSS_SELECTOR, f'nav a[data-view="{name}"]')
    link.send_keys(Keys.ENTER)
    wait.until(lambda page: page.find_element(By.CSS_SELECTOR, f'nav a[data-view="{name}"]').get_attribute("aria-current") == "page")


def audit(name):
    """axe-core on the page as it is: no serious or critical violation; and a screenshot."""
    driver.execute_script(AXE)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => "
        "({id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help, target: v.nodes[0].target}))))"
        ".catch(e => done([{id: 'axe-failed', impact: 'critical', help: String(e)}]))")
    serious = [violation for violation in result if violation["impact"] in ("serious", "critical")]
    seen["axe"][name] = [f"{violation['id']} ({violation['impact']})" for violation in result]
    driver.save_screenshot(os.path.join(shots, f"dashboard-{name}.png"))
    assert not serious, f"axe-core on {name}: {serious}"


try:
    # A task that runs at once (due within three expected runtimes), opened by its address
    # before signing in.
    done_id = task(2)
    driver.get(f"{base}/dashboard#/tasks/{done_id}")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "key").send_keys(Keys.ENTER)
    wait.until(lambda page: page.find_element(By.ID, "live").text == "live")
    wait.until(lambda page: page.find_elements(By.ID, "task-detail"))
    assert done_id[:8] in text("#task-detail h2"), text("#task-detail")
    assert key not in driver.current_url, "the key stays out of the URL"
    seen["deep_link_after_sign_in"] = driver.current_url.split("#", 1)[1]
    wait.until(lambda page: page.find_element(By.ID, "task-status").get_attribute("textContent") == "completed")
    wait.until(lambda page: "verified in the browser" in page.find_element(By.ID, "proofs").text)
    assert "chosen" in text("#assignment") and "Sun" in text("#assignment"), text("#assignment")
    seen["why"] = text("#assignment")[:160]
    # The timeline is the task's archived history (GET /v1/tasks/{id}/events), in sentences.
    wait.until(lambda page: "Credited" in page.find_element(By.ID, "timeline").text)
    seen["timeline"] = text("#timeline")
    for step in ("Submitted and accepted", "Assigned to", "Completed on"):
        assert step in seen["timeline"], seen["timeline"]
    # How the credit was computed: the node's zone, the hour's intensity and its source.
    carbon = text("#task-carbon")
    assert "BE" in carbon and "g CO₂/kWh" in carbon and "carbon-intensity-synthetic-2026.csv" in carbon, carbon
    seen["carbon"] = carbon[-200:]
    audit("task")

    # Flow: a task completes while the page is open, without a reload.
    driver.execute_script("window.sameDocument = true")
    view("flow")
    live_id = task(2)
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, f'tr[data-task="{live_id}"] .status.completed'))
    assert driver.execute_script("return window.sameDocument === true"), "no reload happened"
    seen["completed_live"] = True
    audit("flow")

    # Tasks: thirty more, then a filter and the pages.
    for _ in range(30):
        task(2)
    wait.until(lambda _page: api("GET", "/v1/tasks/counts")["counts"]["completed"] >= 32)
    view("tasks")
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#tasks tbody tr"))
    Select(driver.find_element(By.ID, "filter-status")).select_by_value("completed")
    wait.until(lambda page: "status=completed" in page.current_url)
    wait.until(lambda page: len(task_rows()) == 25)
    statuses = wait.until(lambda page: {cell.text for cell in page.find_elements(By.CSS_SELECTOR, "#tasks tbody .status")})
    assert statuses == {"completed"}, statuses
    first_page = task_rows()
    click("#page-older")
    wait.until(lambda page: task_rows() and task_rows()[0] not in first_page)
    second_page = task_rows()
    assert not set(first_page) & set(second_page), "pages do not repeat"
    click("#page-newer")
    wait.until(lambda page: task_rows()[:1] == first_page[:1])
    seen["pages"] = [len(first_page), len(second_page)]
    audit("tasks")

    # A task not applied yet (here: no such task) is looked for again rather than given up at once.
    driver.get(f"{base}/dashboard#/tasks/{uuid.uuid4()}")
    wait.until(lambda page: "Looking again" in page.find_element(By.ID, "view").text)
    seen["not_yet"] = text("#view")

    # A refused task's reason: a group of three owners is below k-anonymity.
    owners = [str(uuid.uuid4()) for _ in range(3)]
    refused_id = task(60, type="energy_group_optimisation", building_id=str(uuid.uuid4()), simulation_months=12,
                      participants=[{"owner_id": owner, "readings_kwh": [100.0, 110.0]} for owner in owners])
    driver.get(f"{base}/dashboard#/tasks/{refused_id}")
    wait.until(lambda page: page.find_elements(By.ID, "task-reason"))
    wait.until(lambda page: "k-anonymity" in page.find_element(By.ID, "task-reason").text)
    seen["refused_reason"] = text("#task-reason")

    # A task with an hour of slack waits for the sun; it is cancelled from its page.
    waiting_id = task(60)
    driver.get(f"{base}/dashboard#/tasks/{waiting_id}")
    wait.until(lambda page: "waits for a free core, or for a node in the sun" in page.find_element(By.ID, "timeline").text)
    seen["waiting"] = text("#timeline")[-140:]
    click("#cancel-task")
    driver.switch_to.alert.accept()
    wait.until(lambda page: page.find_element(By.ID, "task-status").get_attribute("textContent") == "cancelled")
    assert "cancelled at the organisation's request" in text("#task-reason"), text("#task-reason")
    seen["cancelled"] = True

    # Back and Forward move between the addresses.
    driver.back()
    wait.until(lambda page: page.find_element(By.ID, "task-detail").text.find(refused_id[:8]) >= 0)
    driver.forward()
    wait.until(lambda page: page.find_element(By.ID, "task-detail").text.find(waiting_id[:8]) >= 0)
    seen["back_and_forward"] = True

    # Consent: granted, then revoked, from the page, with a confirmation each time.
    view("consent")
    owner = str(uuid.uuid4())
    driver.find_element(By.ID, "grant-owner").send_keys(owner)
    click("#grant-form button[type=submit]")
    driver.switch_to.alert.accept()
    wait.until(lambda page: "Consent applied" in page.find_element(By.ID, "consent-result").text)
    wait.until(lambda page: "granted" in page.find_element(By.ID, "consent-history").text)
    click(f'tr[data-owner="{owner}"] button.danger')
    driver.switch_to.alert.accept()
    wait.until(lambda page: "Revocation applied" in page.find_element(By.ID, "consent-result").text)
    wait.until(lambda page: "revoked" in page.find_element(By.CSS_SELECTOR, f'tr[data-owner="{owner}"]').text)
    seen["consent"] = text("#consent-history")[:200]
    audit("consent")

    view("fleet")
    wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")) >= 2)
    audit("fleet")
    node_link = driver.find_element(By.CSS_SELECTOR, "#nodes tbody tr a")
    node_name = node_link.text
    node_link.send_keys(Keys.ENTER)
    wait.until(lambda page: node_name in page.find_element(By.CSS_SELECTOR, "#view h2").text)
    audit("node")

    view("credits")
    wait.until(lambda page: "Cooperative fund" in page.find_element(By.ID, "fund").text)
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#credit-nodes tbody tr"))
    # The emissions report by carbon zone: the default zone, location-based beside market-based.
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#emissions-table tbody tr"))
    emissions = text("#emissions-table")
    assert "BE" in emissions and "no contract declared" in emissions, emissions
    seen["emissions"] = emissions[:200]
    audit("credits")

    view("proofs")
    wait.until(lambda page: page.find_element(By.ID, "chain-verdict").text.startswith("Chain verified"))
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#block-list tbody tr"))
    seen["chain"] = text("#chain-verdict")
    audit("proofs")

    # A reload keeps the view.
    driver.refresh()
    wait.until(lambda page: page.find_element(By.ID, "chain-verdict").text.startswith("Chain verified"))
    seen["reload_keeps_the_view"] = driver.current_url.endswith("#/proofs")

    # At 400 px nothing overflows the page sideways.
    driver.set_window_size(400, 900)
    view("tasks")
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#tasks tbody tr"))
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a 400 px screen"
    driver.save_screenshot(os.path.join(shots, "dashboard-tasks-400px.png"))
    seen["narrow"] = True
    driver.set_window_size(1280, 1100)

    # The operator's Health view: the writer's process listed with its role.
    click("#sign-out")
    wait.until(lambda page: page.find_element(By.ID, "key").is_displayed())
    driver.find_element(By.ID, "key").send_keys(operator_key)
    driver.find_element(By.ID, "key").send_keys(Keys.ENTER)
    wait.until(lambda page: page.find_element(By.ID, "who").text == "operator")
    view("health")
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#orchestrators tbody tr"))
    seen["health"] = text("#health")[:400]
    assert "writer" in text("#orchestrators"), text("#orchestrators")
    audit("health")
    print(json.dumps(seen))
except Exception as error:
    print(json.dumps({"error": repr(error), "seen": seen, "url": driver.current_url,
                      "page": driver.find_element(By.TAG_NAME, "body").text[:3000]}))
    driver.save_screenshot(os.path.join(shots, "dashboard-failed.png"))
    sys.exit(1)
finally:
    driver.quit()
