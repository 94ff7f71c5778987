// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

import {ITokenTransferReceiver} from "./ITokenTransferReceiver.sol";

/// @title MaliciousToken — a hostile ERC-20 for reentrancy tests (test-only; never holds value)
/// @notice A plain ERC-20 plus the two callbacks real tokens can have (ERC-777, ERC-677,
/// upgradeable or fee-on-transfer tokens), so tests can prove that re-entering the marketplace's
/// money functions extracts nothing:
/// 1. Armed re-entry: after `arm(target, data)`, the next `transfer` or `transferFrom` calls
///    `target` with `data` *before* any balance moves (the moment a victim's view of its own
///    balance is stalest), records whether that call succeeded and what it returned, and then
///    completes the transfer whatever happened: a failure is recorded, never bubbled. One shot:
///    the arming is cleared before the call, so nested transfers do not fire it again.
/// 2. Recipient notification: *after* balances move, a contract recipient is sent
///    `ITokenTransferReceiver.onTokenTransfer(from, amount)`; a missing or failing hook is ignored.
/// @dev Anyone may mint and arm. Minting notifies nobody and fires no re-entry.
contract MaliciousToken is ERC20 {
    // ---------------------------------------------------------------- errors

    /// @notice Re-entry needs a target contract.
    error ZeroTarget();

    // ---------------------------------------------------------------- events

    /// @notice The next transfer will call `target` with `data` before moving balances.
    event Armed(address indexed target, bytes data);
    /// @notice The armed call to `target` ran; `succeeded` false means it reverted with `returnData`.
    event ReentryAttempted(address indexed target, bool succeeded, bytes returnData);
    /// @notice `recipient` was sent onTokenTransfer; `accepted` false means its hook reverted or is missing.
    event RecipientNotified(address indexed recipient, bool accepted);

    // ---------------------------------------------------------------- storage

    /// @notice Contract the next transfer calls into (zero = disarmed).
    address public reentryTarget;
    /// @notice Calldata of that call.
    bytes public reentryData;
    /// @notice Whether the last re-entrant call succeeded.
    bool public lastReentrySucceeded;
    /// @notice What the last re-entrant call returned, or its revert data when it failed.
    bytes public lastReentryData;
    /// @notice How many re-entrant calls were made so far.
    uint256 public reentryCount;

    // ---------------------------------------------------------------- constructor

    constructor() ERC20("Malicious USD", "mUSD") {}

    // ---------------------------------------------------------------- external

    /// @notice Mints `amount` to `to`. Open to anyone: this token is for tests only.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Makes the next transfer call `target` with `data` before balances move.
    function arm(address target, bytes calldata data) external {
        if (target == address(0)) revert ZeroTarget();
        reentryTarget = target;
        reentryData = data;
        emit Armed(target, data);
    }

    /// @notice Cancels a pending re-entry.
    function disarm() external {
        delete reentryTarget;
        delete reentryData;
    }

    /// @inheritdoc ERC20
    function transfer(address to, uint256 value) public override returns (bool) {
        _reenter();
        super.transfer(to, value);
        _notify(msg.sender, to, value);
        return true;
    }

    /// @inheritdoc ERC20
    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        _reenter();
        super.transferFrom(from, to, value);
        _notify(from, to, value);
        return true;
    }

    /// @notice Six decimals, like the stablecoin it imitates.
    function decimals() public pure override returns (uint8) {
        return 6;
    }

    // ---------------------------------------------------------------- internal

    /// @dev Fires the armed call once (disarming first) and records its outcome without bubbling.
    function _reenter() internal {
        address target = reentryTarget;
        if (target == address(0)) return;
        bytes memory data = reentryData;
        delete reentryTarget;
        delete reentryData;
        (bool succeeded, bytes memory returnData) = target.call(data);
        lastReentrySucceeded = succeeded;
        lastReentryData = returnData;
        ++reentryCount;
        emit ReentryAttempted(target, succeeded, returnData);
    }

    /// @dev Hands control to a contract recipient after it was paid; its failure is ignored.
    function _notify(address from, address to, uint256 value) internal {
        if (to.code.length == 0) return;
        (bool accepted,) = to.call(abi.encodeCall(ITokenTransferReceiver.onTokenTransfer, (from, value)));
        emit RecipientNotified(to, accepted);
    }
}
