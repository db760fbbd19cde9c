"""Drives the dashboard in Debian's headless Chromium over WebDriver (selenium).

    dashboard.py BASE_URL API_KEY SCREENSHOT

Signs in, submits a task through the API, sees it reach `completed` on the page without a
reload, opens its detail and sees its inclusion proof verified in the browser, saves a
screenshot, reloads (the state comes back from the API), and verifies the chain. Exit 0 when
all of it held; prints what it saw as JSON.
"""
import datetime, json, sys, urllib.request, uuid

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait

base, key, screenshot = sys.argv[1:4]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"]:
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
# The live views redraw as events come: an element found may be replaced before it is used.
wait = WebDriverWait(driver, 30, ignored_exceptions=[StaleElementReferenceException])
seen = {}


def click(selector):
    """Clicks what `selector` finds, finding it again if the page redrew it meanwhile."""
    def clicked(page):
        page.find_element(By.CSS_SELECTOR, selector).click()
        return True
    wait.until(clicked)


def row_completed(task_id):
    return lambda page: page.find_elements(By.CSS_SELECTOR, f'tr[data-task="{task_id}"] td.status.completed')


try:
    driver.get(base + "/dashboard")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "sign-in-button").click()
    wait.until(lambda page: page.find_element(By.ID, "live").text == "live")
    wait.until(lambda page: page.find_elements(By.ID, "tasks"))
    assert key not in driver.current_url, "the key stays out of the URL"
    driver.execute_script("window.sameDocument = true")

    deadline = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
    task = {"copropriete_id": str(uuid.uuid4()), "deadline": deadline,
            "kind": {"type": "building_thermal_simulation", "building_id": str(uuid.uuid4()),
                     "insulation_score": 0.5, "surface_m2": 90.0, "heating_degree_days": 2400.0}}
    request = urllib.request.Request(base + "/v1/tasks", data=json.dumps(task).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    task_id = json.load(urllib.request.urlopen(request))["task_id"]
    seen["task_id"] = task_id

    wait.until(row_completed(task_id))
    assert driver.execute_script("return window.sameDocument === true"), "no reload happened"
    seen["completed_live"] = True

    click(f'tr[data-task="{task_id}"]')
    wait.until(lambda page: page.find_element(By.ID, "task-status").text == "completed")
    wait.until(lambda page: "verified in the browser" in page.find_element(By.ID, "proofs").text)
    detail = driver.find_element(By.ID, "task-detail").text
    assert "Attempt 1 → node" in detail, detail
    seen["proof"] = driver.find_element(By.ID, "proofs").text
    driver.save_screenshot(screenshot)

    driver.refresh()
    wait.until(lambda page: page.find_element(By.ID, "live").text == "live")
    wait.until(row_completed(task_id))
    seen["after_reload"] = "completed"
    # After the reload the page has seen no event of the task: why it went where it went comes
    # from the API.
    click(f'tr[data-task="{task_id}"]')
    wait.until(lambda page: "runner-up" in page.find_element(By.ID, "assignment").text)
    seen["why_after_reload"] = driver.find_element(By.ID, "assignment").text[:120]

    click('[data-view="fleet"]')
    wait.until(lambda page: len(page.find_elements(By.CSS_SELECTOR, "#nodes tr")) >= 3)
    click('[data-view="credits"]')
    wait.until(lambda page: "Cooperative fund" in page.find_element(By.ID, "view").text)
    owner = str(uuid.uuid4())
    grant = urllib.request.Request(base + f"/v1/owners/{owner}/consent", data=b'{"consent_version": "2026-01"}',
                                   method="PUT", headers={"Authorization": "Bearer " + key,
                                                          "Content-Type": "application/json"})
    command = json.load(urllib.request.urlopen(grant))["command_id"]

    def applied(_page):
        asked = urllib.request.Request(base + f"/v1/commands/{command}", headers={"Authorization": "Bearer " + key})
        return json.load(urllib.request.urlopen(asked))["status"] == "applied"

    # The grant is applied asynchronously: the view is opened once it is.
    wait.until(applied)
    click('[data-view="consent"]')
    wait.until(lambda page: owner in page.find_element(By.ID, "owners").text)
    wait.until(lambda page: next(row for row in page.find_elements(By.CSS_SELECTOR, "#owners tr") if owner in row.text).click() or True)
    wait.until(lambda page: "granted (version 2026-01)" in page.find_element(By.ID, "consent-history").text)
    seen["consent"] = driver.find_element(By.ID, "consent-history").text[:200]
    click('[data-view="proofs"]')
    wait.until(lambda page: page.find_element(By.ID, "chain-verdict").text.startswith("Chain verified"))
    seen["chain"] = driver.find_element(By.ID, "chain-verdict").text
    print(json.dumps(seen))
except Exception as error:
    print(json.dumps({"error": repr(error), "seen": seen, "page": driver.find_element(By.TAG_NAME, "body").text[:2000]}))
    driver.save_screenshot(screenshot.replace(".png", "-failed.png"))
    sys.exit(1)
finally:
    driver.quit()
