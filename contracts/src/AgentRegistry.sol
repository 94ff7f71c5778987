// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IAgentRegistry} from "./interfaces/IAgentRegistry.sol";

/// @title AgentRegistry — ERC-8004 agent identities with owner-set spend permissions
/// @notice `register` mints an ERC-721 agentId to the developer who owns the agent. The agent's
/// hot wallet proves control with an EIP-712 signature (ERC-1271 for contract wallets). Metadata
/// keys the marketplace reads: `encryptionKey` (32-byte X25519 public key) and `endpoint`.
/// An owner can let the agent wallet pull up to `allowance` of a token per `period` from the
/// owner's balance, so a human caps what the agent can spend; revocable at once.
/// A spend permission is the owner's alone: only the owner grants or changes it; it names the
/// wallet it was granted to and works only while that binding lasts — any rebinding (another
/// wallet, or the same one unbound and bound again, e.g. by an approved operator) ends it;
/// re-granting within a period keeps what was spent in it; any transfer of the agent NFT ends
/// every permission for good (a per-agent ownership epoch), and the grantor can always revoke.
/// @dev Function and event names follow the ERC-8004 identity registry.
contract AgentRegistry is IAgentRegistry, ERC721URIStorage, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice An agent's wallet and the counters of its history, in one slot: how many times the
    /// NFT moved (transfer, transfer to self, burn) and how many times a wallet was bound or unbound.
    struct AgentState {
        address wallet;
        uint48 ownershipEpoch;
        uint48 bindingEpoch;
    }

    // ---------------------------------------------------------------- storage

    /// @notice EIP-712 type of the wallet-binding message (ERC-8004).
    bytes32 public constant AGENT_WALLET_SET_TYPEHASH =
        keccak256("AgentWalletSet(uint256 agentId,address newWallet,address owner,uint256 deadline)");
    /// @notice A wallet-binding signature may be valid for at most this long.
    uint256 public constant MAX_DEADLINE_DELAY = 5 minutes;
    /// @dev keccak256("agentWallet"): the reserved metadata key.
    bytes32 private constant AGENT_WALLET_KEY_HASH = keccak256("agentWallet");

    /// @notice Number of agents registered; ids run from 1.
    uint256 public agentCount;
    /// @dev Metadata by agent and key.
    mapping(uint256 agentId => mapping(string metadataKey => bytes metadataValue)) private _metadata;
    /// @dev The wallet the agent acts from, and its epochs: a permission granted before either
    /// epoch moved on is dead.
    mapping(uint256 agentId => AgentState) private _agents;
    /// @notice Spend permissions by agent and token.
    mapping(uint256 agentId => mapping(address token => SpendPermission)) private _permissions;

    // ---------------------------------------------------------------- constructor

    constructor() ERC721("agentmarket Agent", "AGENT") EIP712("ERC8004IdentityRegistry", "1") {}

    // ---------------------------------------------------------------- external: identity

    /// @inheritdoc IAgentRegistry
    function register() external returns (uint256 agentId) {
        agentId = _register("");
    }

    /// @inheritdoc IAgentRegistry
    function register(string calldata agentURI) external returns (uint256 agentId) {
        agentId = _register(agentURI);
    }

    /// @inheritdoc IAgentRegistry
    function register(string calldata agentURI, MetadataEntry[] calldata metadata) external returns (uint256 agentId) {
        agentId = _register(agentURI);
        for (uint256 i; i < metadata.length; ++i) {
            _setMetadata(agentId, metadata[i].metadataKey, metadata[i].metadataValue);
        }
    }

    /// @inheritdoc IAgentRegistry
    function setAgentURI(uint256 agentId, string calldata newURI) external {
        _checkOwnerOrOperator(agentId);
        _setTokenURI(agentId, newURI);
        emit URIUpdated(agentId, newURI, msg.sender);
    }

    /// @inheritdoc IAgentRegistry
    function setMetadata(uint256 agentId, string calldata metadataKey, bytes calldata metadataValue) external {
        _checkOwnerOrOperator(agentId);
        _setMetadata(agentId, metadataKey, metadataValue);
    }

    /// @inheritdoc IAgentRegistry
    function setAgentWallet(uint256 agentId, address newWallet, uint256 deadline, bytes calldata signature)
        external
    {
        address owner = _checkOwnerOrOperator(agentId);
        if (newWallet == address(0)) revert ZeroAddress();
        if (block.timestamp > deadline) revert WalletSignatureExpired(deadline, block.timestamp);
        if (deadline > block.timestamp + MAX_DEADLINE_DELAY) {
            revert DeadlineTooFar(deadline, block.timestamp + MAX_DEADLINE_DELAY);
        }
        bytes32 digest =
            _hashTypedDataV4(keccak256(abi.encode(AGENT_WALLET_SET_TYPEHASH, agentId, newWallet, owner, deadline)));
        if (!SignatureChecker.isValidSignatureNow(newWallet, digest, signature)) {
            revert InvalidWalletSignature(agentId, newWallet);
        }
        _writeAgentWallet(agentId, newWallet);
    }

    /// @inheritdoc IAgentRegistry
    function unsetAgentWallet(uint256 agentId) external {
        _checkOwnerOrOperator(agentId);
        _writeAgentWallet(agentId, address(0));
    }

    // ---------------------------------------------------------------- external: spend permissions

    /// @inheritdoc IAgentRegistry
    /// @dev Reverts NotAgentOwner (caller is not the owner, operators included), ZeroAddress,
    /// InvalidPeriod (0 or above 2^48 - 1), WalletNotBound.
    function grantSpendPermission(uint256 agentId, address token, address wallet, uint256 allowance, uint256 period)
        external
    {
        if (_requireOwned(agentId) != msg.sender) revert NotAgentOwner(agentId, msg.sender);
        if (token == address(0) || wallet == address(0)) revert ZeroAddress();
        if (period == 0 || period > type(uint48).max) revert InvalidPeriod(period);
        AgentState memory agent = _agents[agentId];
        if (wallet != agent.wallet) revert WalletNotBound(agentId, wallet, agent.wallet);

        SpendPermission storage permission = _permissions[agentId][token];
        uint48 periodStart = uint48(block.timestamp);
        uint128 spent;
        // A permission written under this ownership (live, revoked or rebound) is the same owner's
        // money this period: keep counting.
        if (permission.period != 0 && permission.epoch == agent.ownershipEpoch) {
            (uint48 currentStart, bool rolled) = _currentPeriod(permission.periodStart, permission.period);
            if (!rolled) spent = permission.spentInPeriod;
            if (permission.period == period) periodStart = currentStart;
        }
        uint128 cap = uint128(allowance > type(uint128).max ? type(uint128).max : allowance);
        _permissions[agentId][token] = SpendPermission({
            grantor: msg.sender,
            period: uint48(period),
            periodStart: periodStart,
            wallet: wallet,
            epoch: agent.ownershipEpoch,
            binding: agent.bindingEpoch,
            allowance: cap,
            spentInPeriod: spent
        });
        emit SpendPermissionGranted(agentId, token, msg.sender, wallet, allowance, period, spent);
    }

    /// @inheritdoc IAgentRegistry
    /// @dev Reverts NoSpendPermission (none, or already revoked), NotGrantor.
    function revokeSpendPermission(uint256 agentId, address token) external {
        SpendPermission storage permission = _permissions[agentId][token];
        address grantor = permission.grantor;
        if (grantor == address(0)) revert NoSpendPermission(agentId, token);
        if (grantor != msg.sender) revert NotGrantor(agentId, token, msg.sender, grantor);
        permission.grantor = address(0);
        emit SpendPermissionRevoked(agentId, token, msg.sender);
    }

    /// @inheritdoc IAgentRegistry
    /// @dev Reverts NotAgentWallet (caller is not the agent's wallet), NoSpendPermission (never
    /// granted, revoked, or the agent moved since), WalletBindingChanged (the wallet was bound
    /// again since the grant), SpendPermissionExceeded.
    function spendFromOwner(uint256 agentId, address token, address to, uint256 amount) external nonReentrant {
        AgentState memory agent = _agents[agentId];
        address wallet = agent.wallet;
        if (msg.sender != wallet || wallet == address(0)) revert NotAgentWallet(agentId, msg.sender, wallet);
        SpendPermission storage permission = _permissions[agentId][token];
        address grantor = permission.grantor;
        // The grantor is the owner: only the owner grants, and any move of the NFT bumps the epoch.
        if (grantor == address(0) || permission.epoch != agent.ownershipEpoch) {
            revert NoSpendPermission(agentId, token);
        }
        // The wallet is the one granted to, under the same binding: any rebinding bumps the count.
        if (permission.binding != agent.bindingEpoch) {
            revert WalletBindingChanged(agentId, token, permission.wallet, wallet);
        }
        (uint48 periodStart, bool rolled) = _currentPeriod(permission.periodStart, permission.period);
        if (rolled) {
            permission.periodStart = periodStart;
            permission.spentInPeriod = 0;
        }
        uint256 remaining = _remaining(permission.allowance, permission.spentInPeriod);
        if (amount > remaining) revert SpendPermissionExceeded(agentId, token, remaining, amount);
        permission.spentInPeriod += uint128(amount);
        IERC20(token).safeTransferFrom(grantor, to, amount);
        emit SpendPermissionUsed(agentId, token, to, amount, permission.spentInPeriod);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IAgentRegistry
    function getAgentWallet(uint256 agentId) external view returns (address) {
        _requireOwned(agentId);
        return _agents[agentId].wallet;
    }

    /// @inheritdoc IAgentRegistry
    function getMetadata(uint256 agentId, string calldata metadataKey) external view returns (bytes memory) {
        return _metadata[agentId][metadataKey];
    }

    /// @inheritdoc IAgentRegistry
    function spendPermission(uint256 agentId, address token)
        external
        view
        returns (SpendPermission memory permission, bool active, uint256 remaining)
    {
        permission = _permissions[agentId][token];
        AgentState memory agent = _agents[agentId];
        active = permission.grantor != address(0) && permission.epoch == agent.ownershipEpoch
            && permission.binding == agent.bindingEpoch;
        if (!active) return (permission, false, 0);
        (, bool rolled) = _currentPeriod(permission.periodStart, permission.period);
        remaining = _remaining(permission.allowance, rolled ? 0 : permission.spentInPeriod);
    }

    /// @inheritdoc IAgentRegistry
    function ownershipEpoch(uint256 agentId) external view returns (uint256) {
        return _agents[agentId].ownershipEpoch;
    }

    /// @inheritdoc IAgentRegistry
    function walletBindingEpoch(uint256 agentId) external view returns (uint256) {
        return _agents[agentId].bindingEpoch;
    }

    /// @inheritdoc IAgentRegistry
    function agentWalletDigest(uint256 agentId, address newWallet, address owner, uint256 deadline)
        external
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(AGENT_WALLET_SET_TYPEHASH, agentId, newWallet, owner, deadline)));
    }

    // ---------------------------------------------------------------- internal

    function _register(string memory agentURI) internal returns (uint256 agentId) {
        agentId = ++agentCount;
        _safeMint(msg.sender, agentId);
        if (bytes(agentURI).length > 0) _setTokenURI(agentId, agentURI);
        _writeAgentWallet(agentId, msg.sender);
        emit Registered(agentId, agentURI, msg.sender);
    }

    function _setMetadata(uint256 agentId, string calldata metadataKey, bytes calldata metadataValue) internal {
        if (keccak256(bytes(metadataKey)) == AGENT_WALLET_KEY_HASH) revert ReservedMetadataKey(metadataKey);
        _metadata[agentId][metadataKey] = metadataValue;
        emit MetadataSet(agentId, metadataKey, metadataKey, metadataValue);
    }

    /// @dev Every write of the binding (bind, unbind, transfer) ends the permissions granted under
    /// the previous one.
    function _writeAgentWallet(uint256 agentId, address wallet) internal {
        AgentState storage agent = _agents[agentId];
        agent.wallet = wallet;
        ++agent.bindingEpoch;
        bytes memory value = wallet == address(0) ? bytes("") : abi.encodePacked(wallet);
        _metadata[agentId]["agentWallet"] = value;
        emit MetadataSet(agentId, "agentWallet", "agentWallet", value);
    }

    function _checkOwnerOrOperator(uint256 agentId) internal view returns (address owner) {
        owner = _requireOwned(agentId);
        if (!_isAuthorized(owner, msg.sender, agentId)) revert NotAgentOwner(agentId, msg.sender);
    }

    /// @dev The start of the period `block.timestamp` falls in, and whether it is later than
    /// the stored one (then nothing of the allowance is spent in it yet).
    function _currentPeriod(uint48 periodStart, uint256 period) internal view returns (uint48 start, bool rolled) {
        start = periodStart;
        if (block.timestamp < uint256(start) + period) return (start, false);
        uint256 elapsed = block.timestamp - start;
        return (uint48(block.timestamp - (elapsed % period)), true);
    }

    /// @dev What is left of `allowance` after `spent` (0 when a lowered cap is below what was spent).
    function _remaining(uint128 allowance, uint128 spent) internal pure returns (uint256) {
        return allowance > spent ? allowance - spent : 0;
    }

    /// @dev Every move of the agent NFT (transfer, transfer to self, burn) unbinds its wallet
    /// (ERC-8004) and starts a new ownership epoch, which ends every spend permission for good:
    /// the NFT coming back to a grantor does not revive one.
    function _update(address to, uint256 tokenId, address auth) internal override returns (address from) {
        from = super._update(to, tokenId, auth);
        if (from != address(0)) {
            ++_agents[tokenId].ownershipEpoch;
            _writeAgentWallet(tokenId, address(0));
        }
    }
}
